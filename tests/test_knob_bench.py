"""The knob benchmark on a tiny model: structure and invariants of its rows, never timing values."""

from __future__ import annotations

import json

import pytest
import torch

from harness.bench.knob_bench import (
    KNOBS_OFF,
    KnobSetting,
    _prepare,
    bench_knobs,
    parse_knob,
    time_interleaved,
)
from harness.cli import main
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.devices import get_device
from harness.errors import ConfigError
from harness.records import SCHEMA_VERSION
from harness.report.knob_bench import knob_bench_markdown
from harness.timing import MeasurementProtocol

TINY = CandidateConfig(embed_dim=32, depth=2, num_heads=1, head_dim=16, patch_size=8, img_size=32,
                       num_classes=10)
SETTINGS = [
    KnobSetting("merge_r=4", {"merge_r": 4}),
    KnobSetting("weight_sparsity=block",
                {"weight_sparsity": "block", "block_sparsity": 0.5, "sparsity_block": 16}),
    KnobSetting("precision=int8", {"precision": "int8"}),
]


@pytest.fixture
def device(fast_device_file):
    return get_device(str(fast_device_file))


@pytest.fixture
def result(device):
    # tiny_merged has a knob on: its dense reference must still have every knob off.
    archs = {"tiny": TINY, "tiny_merged": TINY.replace(embed_dim=48, merge_r=2)}
    progress = []
    bench = bench_knobs(device, archs, [1, 2], SETTINGS, rounds=2, iters=2,
                        on_row=lambda done, total, row: progress.append((done, total, row.knob)))
    assert [(done, total) for done, total, _ in progress] == [(n, 12) for n in range(1, 13)]
    return bench


def test_rows_cover_every_arch_batch_and_knob(result):
    keys = [(row.arch, row.batch_size, row.knob) for row in result.rows]
    assert keys == [(arch, batch, setting.label) for arch in ("tiny", "tiny_merged")
                    for batch in (1, 2) for setting in SETTINGS]


def test_rows_costs_and_speedups_are_consistent(result):
    archs = {"tiny": TINY, "tiny_merged": TINY.replace(embed_dim=48)}
    for row in result.rows:
        dense = archs[row.arch].replace(**KNOBS_OFF)
        knob = estimate_cost(dense.replace(**row.settings))
        assert row.dense_gmacs == estimate_cost(dense).gmacs
        assert (row.gmacs, row.effective_gmacs) == (knob.gmacs, knob.effective_gmacs)
        assert row.mac_reduction == pytest.approx(estimate_cost(dense).macs / knob.effective_macs)
        assert row.speedup_per_mac_reduction == pytest.approx(row.speedup / row.mac_reduction)
        assert len(row.round_speedups) == 2 and all(r > 0 for r in row.round_speedups)
        assert row.speedup_ci95[0] <= row.speedup <= row.speedup_ci95[1]
        assert row.latency_ms > 0 and row.dense_latency_ms > 0
        assert row.how and isinstance(row.accelerated, bool)
    block = next(row for row in result.rows if row.knob == "weight_sparsity=block")
    assert block.effective_gmacs < block.gmacs == block.dense_gmacs
    assert not block.accelerated  # the test profile lists no accelerated knob


def test_json_and_markdown_render_the_same_rows(result):
    document = json.loads(json.dumps(result.to_json({"host": "test"})))
    assert document["schema_version"] == SCHEMA_VERSION and document["device"] == "fastcpu"
    assert document["environment"] == {"host": "test"}
    assert document["measurement"]["rounds"] == 2 and document["measurement"]["threads"] == 1
    assert len(document["rows"]) == len(result.rows)
    row = document["rows"][0]
    assert row["mac_reduction"] == result.rows[0].mac_reduction
    assert {"speedup_per_mac_reduction", "speedup_ci95", "knobs", "how"} <= set(row)
    markdown = knob_bench_markdown(result)
    assert markdown.count("\n## ") + markdown.startswith("## ") == 4
    assert markdown.count("| knob | GMACs |") == 4
    assert "## fastcpu · tiny_merged · batch 2" in markdown
    assert markdown.count("| merge_r=4 |") == 4


def test_knob_and_dense_models_share_weights_and_inputs(device):
    dense = _prepare(device, TINY, 2)
    merged = _prepare(device, TINY.replace(merge_r=4), 2)
    assert torch.equal(dense[1], merged[1])
    merged_weights = merged[0].state_dict()
    assert all(torch.equal(t, merged_weights[name]) for name, t in dense[0].state_dict().items())


def test_rounds_alternate_which_model_goes_first(device):
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, inputs):
            calls.append(self.name)

    dense, knob = (Recorder("D"), None), (Recorder("K"), None)
    # warm-up stops after one call: its time limit is at once past, before it could be steady
    protocol = MeasurementProtocol(warmup_min_iters=1, warmup_min_s=1e-9, warmup_max_s=1e-9)
    timing = time_interleaved(device, dense, knob, protocol, rounds=3, iters=2)
    assert "".join(calls) == "D" + "K" + "DDKK" + "KKDD" + "DDKK"
    assert timing.warmup_steady is False
    assert len(timing.dense_ms) == len(timing.knob_ms) == 6 and len(timing.round_speedups) == 3


def test_every_timed_call_holds_the_device_timing_lock(device, monkeypatch):
    import contextlib

    held: list[str] = []

    @contextlib.contextmanager
    def lock(name):
        held.append(name)
        yield
        held.remove(name)

    class Probe(torch.nn.Module):
        def forward(self, inputs):
            assert held == [device.name], "timed without the device's timing lock"

    monkeypatch.setattr("harness.bench.knob_bench.exclusive_timing", lock)
    protocol = MeasurementProtocol(warmup_min_iters=1, warmup_min_s=1e-9, warmup_max_s=1e-9)
    time_interleaved(device, (Probe(), None), (Probe(), None), protocol, rounds=2, iters=2)
    assert held == []


def test_parse_knob_keeps_list_values_whole():
    setting = parse_knob("keep_rate=0.7,keep_layers=[4,7,10]")
    assert setting.label == "keep_rate=0.7,keep_layers=[4,7,10]"
    assert setting.values == {"keep_rate": 0.7, "keep_layers": (4, 7, 10)}
    assert parse_knob("weight_sparsity=2:4").values == {"weight_sparsity": "2:4"}


@pytest.mark.parametrize(("text", "message"), [
    ("embed_dim=64", "--knob expects KEY=VALUE[,KEY=VALUE] with knob keys"),
    ("merge_r", "--knob expects KEY=VALUE"),
    ("merge_r=abc", "--knob merge_r: expected a non-negative integer"),
])
def test_parse_knob_rejects_non_knobs_and_bad_values(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_knob(text)


def test_cli_invalid_setting_is_one_line_before_any_timing(fast_device_file, capsys):
    args = ["bench-knobs", "--knob", "merge_r=999", "--arch", "deit_tiny", "--device",
            str(fast_device_file)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("harness: error: knob merge_r=999 on deit_tiny: merge_r:")


def test_cli_refuses_a_device_that_estimates_instead_of_timing(capsys):
    assert main(["bench-knobs", "--device", "zcu102", "--arch", "deit_tiny"]) == 2
    assert capsys.readouterr().err == (
        "harness: error: bench-knobs times real calls; device 'zcu102' of kind 'fpga-hls' "
        "estimates latency (use 'harness measure' with --set)\n")


def test_cli_writes_json_and_markdown(fast_device_file, tmp_path, capsys):
    args = ["bench-knobs", "--arch", "deit_tiny", "--batch-size", "1", "--knob", "merge_r=8",
            "--rounds", "1", "--iters", "1", "--device", str(fast_device_file),
            "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("[1/1] deit_tiny b1 merge_r=8: ")
    printed = json.loads(captured.out)
    assert printed == json.loads((tmp_path / "knobs.json").read_text())
    assert printed["environment"]["device"]["name"] == "fastcpu"
    assert [row["knob"] for row in printed["rows"]] == ["merge_r=8"]
    assert (tmp_path / "knobs.md").read_text().startswith("## fastcpu · deit_tiny · batch 1")


def test_knobs_are_timed_on_a_checkpoints_weights(device, tmp_path, capsys):
    trained = {name: tensor + 0.01 for name, tensor in
               _prepare(device, TINY, 1)[0].state_dict().items()}  # not the seeded weights
    dense, merged = (_prepare(device, config, 1, trained) for config in
                     (TINY, TINY.replace(merge_r=4)))
    assert all(torch.equal(dense[0].state_dict()[name], tensor)
               for name, tensor in trained.items())
    assert all(torch.equal(merged[0].state_dict()[name], tensor)
               for name, tensor in trained.items())
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": {"head.weight": torch.zeros(5, 192)}}, path)
    args = ["bench-knobs", "--device", "cpu", "--weights", str(path)]
    assert main([*args, "--arch", "deit_tiny", "deit_small"]) == 2
    assert "give one --arch, got 2" in capsys.readouterr().err
    assert main([*args, "--arch", "deit_tiny"]) == 2  # checked before anything is timed
    assert "tensors of this model are missing: cls_token" in capsys.readouterr().err
