"""``harness rank-check``, the measured τ in search reports, and early stopping on accuracy."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState
from test_study import _settings

from harness.accuracy import DssIndicator, get_estimator
from harness.cli import main
from harness.rank_check import known_rank_checks, rank_check
from harness.space import load_space
from harness.study import run_search


def test_rank_check_of_an_estimator_against_itself_is_perfect(tiny_space_file):
    space = load_space(str(tiny_space_file))
    params = get_estimator("proxy:params")
    [check] = rank_check(space, [params], get_estimator("proxy:params"), n=8)
    assert check.n == 8 and len({p["config_key"] for p in check.points}) == 8
    assert check.kendall_tau == pytest.approx(1) and check.spearman_rho == pytest.approx(1)
    assert check.kendall_tau_ci95[0] <= check.kendall_tau <= check.kendall_tau_ci95[1]


def test_rank_check_cli_writes_the_page_and_the_search_report_quotes_tau(
        tiny_space_file, fast_device_file, tmp_path, capsys):
    args = ["rank-check", "--space", str(tiny_space_file), "--accuracy", "proxy:dss",
            "proxy:gmacs", "--reference", "proxy:params", "--n", "6", "--out",
            str(tmp_path / "rank"), "--json"]
    assert main(args) == 0
    dss, gmacs = json.loads(capsys.readouterr().out)
    low, high = dss["kendall_tau_ci95"]
    assert -1 <= low <= dss["kendall_tau"] <= high <= 1
    assert [p["config_key"] for p in dss["points"]] == [p["config_key"] for p in gmacs["points"]]
    page = (tmp_path / "rank" / "proxy-dss" / "rank_check.html").read_text()
    assert "data:image/png;base64," in page and "Kendall τ" in page
    [stored] = known_rank_checks("tiny", "proxy:dss")
    assert stored.reference == "proxy:params" and stored.n == 6
    out = tmp_path / "search"
    assert main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--trials", "2", "--out", str(out), "--quiet"]) == 0
    assert f"Kendall τ {stored.kendall_tau:.3f}" in (out / "report.html").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["rank-check", "--n", "2"], "--n must be at least 3"),
    (["rank-check", "--reference", "train:nowhere"], "unknown dataset"),
    (["rank-check", "--accuracy", "guess"], "unknown accuracy estimator 'guess'"),
])
def test_rank_check_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


class _Curve(DssIndicator):
    """Reports a learning curve whose level is fixed by the configuration (spread over [0, 1))."""

    def estimate(self, model, config, report=None):
        level = int(config.key()[:6], 16) % 1000 / 1000
        for step in (10, 20, 30):
            if report:
                report(step, level * step / 30)
        return level


def test_candidates_in_the_bottom_quarter_of_learning_curves_stop_early(
        tiny_space_file, fast_device_file, tmp_path):
    study = run_search(_settings(tiny_space_file, fast_device_file, tmp_path,
                                 estimator=_Curve(), n_trials=14, sampler="random"))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in study.trials if "pruned" in t.user_attrs]
    assert len(complete) == 14 and stopped
    for trial in stopped:
        assert trial.state == TrialState.PRUNED
        assert "below the 25th percentile" in trial.user_attrs["pruned"]
        assert trial.user_attrs["accuracy_curve"][-1][0] == 10  # stopped at its first report
        earlier = [t.values[1] for t in complete if t.number < trial.number]
        assert len(earlier) >= 5  # never before five curves have finished
        assert trial.user_attrs["accuracy_curve"][0][1] * 3 < sorted(earlier)[len(earlier) // 2]
    assert all(len(t.user_attrs["accuracy_curve"]) == 3 for t in complete)
