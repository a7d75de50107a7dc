"""Bad input, table-driven: one line on stderr, exit code 2, no traceback, nothing lost.

Every case runs in a sandbox that holds a finished study (``out/study.journal``), its own data
directory and its own temporary directory. After the command, the study's trials and the
journal's bytes are unchanged, and no file anywhere in the sandbox was created, changed or
removed: a refused command leaves no trace, inside ``--out`` or outside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from harness.cli import main

STUDY = "existing"
# A search that times nothing (the FPGA profile is estimated) and scores by parameter count:
# seconds, not minutes, and the same arguments resume the study.
SEARCH = ["search", "--device", "zcu102", "--accuracy", "proxy:params", "--budget", "1gflop",
          "--study", STUDY, "--quiet"]
NOT_UTF8 = b"name: caf\xe9\n"
# "Billion laughs": nine levels of nine aliases, 387 million strings once expanded.
ALIAS_BOMB = ("description:\n  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
              + "".join(f"  - &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n"
                        for level in range(1, 9)))
PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-trial study, made once and copied into every sandbox."""
    out = tmp_path_factory.mktemp("finished") / "out"
    data = tmp_path_factory.mktemp("finished-data")
    previous = os.environ.get("HARNESS_DATA_DIR")
    os.environ["HARNESS_DATA_DIR"] = str(data)
    try:
        assert main([*SEARCH, "--trials", "3", "--out", str(out)]) == 0
    finally:
        if previous is None:
            del os.environ["HARNESS_DATA_DIR"]
        else:
            os.environ["HARNESS_DATA_DIR"] = previous
    return out


@dataclass
class Sandbox:
    root: Path
    out: Path  # the finished study's output directory

    @property
    def journal(self) -> Path:
        return self.out / "study.journal"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def fifo(self, name: str) -> str:
        path = self.root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return str(path)

    def folder(self, name: str) -> str:
        path = self.root / "inputs" / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def damage_journal(self, how: str) -> None:
        """Damage the study's journal as a crash (a cut record) or stray bytes would."""
        data = self.journal.read_bytes()
        self.journal.write_bytes(data[:-137] if how == "cut" else data + b"garbage\n")

    def under_a_file(self, name: str) -> str:
        """A path whose parent is a regular file: it can never be created (root or not)."""
        return str(Path(self.file("a-file", "not a directory\n")) / name)


@pytest.fixture
def sandbox(tmp_path: Path, finished_study: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    shutil.copytree(finished_study, tmp_path / "out")
    for name in ("data", "tmp", "work"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches gettempdir()
    monkeypatch.chdir(tmp_path / "work")  # default output folders (reports/...) land here
    return Sandbox(tmp_path, tmp_path / "out")


def _tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``, a file with its size and modification time. (A folder's time
    changes when a lock file comes and goes, as the journal's lock does while it is checked.)"""
    return {str(path.relative_to(root)): None if path.is_dir() else
            (path.lstat().st_size, path.lstat().st_mtime_ns) for path in root.rglob("*")}


def _trials(journal: Path) -> list[tuple]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials]


Case = Callable[[Sandbox], list[str]]

def _damaged(how: str, command: list[str]) -> Case:
    def make(sandbox: Sandbox) -> list[str]:
        sandbox.damage_journal(how)
        return [*command, str(sandbox.out)]
    return make


def _one_class(sandbox: Sandbox) -> str:
    sandbox.file("cats-only/cats/a.png", _png())
    return sandbox.folder("cats-only")


def _broken_image(sandbox: Sandbox) -> str:
    sandbox.file("pets/cats/a.png", _png())
    sandbox.file("pets/dogs/broken.png", "not a png")
    return sandbox.folder("pets")


def _empty_class(sandbox: Sandbox) -> str:
    sandbox.file("pets/cats/a.png", _png())
    sandbox.file("pets/dogs/a.png", _png())
    (sandbox.root / "inputs" / "pets" / "fish").mkdir()
    return sandbox.folder("pets")


def _saved(sandbox: Sandbox, name: str, value: object) -> str:
    import torch

    path = sandbox.root / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return str(path)


def _deit_tiny(sandbox: Sandbox, wider: bool = False) -> str:
    """DeiT-Tiny's weights in timm's names; ``wider``: its class token 200 wide."""
    import torch

    from harness.models import build_model, preset_config

    state = build_model(preset_config("deit_tiny")).state_dict()
    if wider:
        state["cls_token"] = torch.zeros(1, 1, 200)
    return _saved(sandbox, "wider.pth" if wider else "deit_tiny.pth", state)


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


CASES: list[tuple[str, Case, str]] = [
    # a journal a crash or stray bytes damaged: refused before anything is written to it
    ("search on a cut journal", _damaged("cut", [*SEARCH, "--out"]),
     "journal {root}/out/study.journal is damaged from line"),
    ("report of a journal with garbage", _damaged("garbage", ["report"]),
     "journal {root}/out/study.journal is damaged from line"),
    # models and documents too large to build or read
    ("depth 10000", lambda s: ["measure", "--device", "zcu102", "--no-latency", "--set",
                               "depth=10000"],
     "--set depth: expected a positive integer up to 256, got 10000"),
    ("num_heads 100000", lambda s: ["measure", "--device", "zcu102", "--no-latency", "--set",
                                    "num_heads=100000"],
     "--set num_heads: expected a positive integer up to 256, got 100000"),
    ("space of depth 10000", lambda s: [*SEARCH, "--space", s.file("deep.yaml",
                                                                   "params: {depth: 10000}\n"),
                                        "--out", str(s.out)],
     "deep.yaml: params.depth: expected a positive integer up to 256, got 10000"),
    ("alias bomb in a description", lambda s: [*SEARCH, "--space", s.file(
        "bomb.yaml", "params: {depth: 12}\n" + ALIAS_BOMB), "--out", str(s.out)],
     "bomb.yaml: its aliases expand to more than 100,000 values"),
    ("200,000 choices", lambda s: [*SEARCH, "--space", s.file(
        "wide.yaml", f"params: {{embed_dim: {[192] * 200_000}}}\n"), "--out", str(s.out)],
     "params.embed_dim: a list of more than 10,000 items"),
    ("window_size without window attention", lambda s: ["measure", "--no-latency", "--set",
                                                        "window_size=5"],
     "window_size=5 has no effect"),
    # the supernet estimator's data
    ("unknown supernet dataset", lambda s: [*SEARCH[:-7], "--accuracy", "supernet:cifar",
                                            *SEARCH[-5:], "--out", str(s.out)],
     "unknown dataset 'cifar'; valid: mnist, fashion-mnist, digits, imagefolder:PATH"),
    ("image folder of one class", lambda s: [*SEARCH[:-7], "--accuracy",
                                             f"supernet:imagefolder:{_one_class(s)}",
                                             *SEARCH[-5:], "--out", str(s.out)],
     "needs sub-folders of images for at least 2 classes"),
    ("unreadable image", lambda s: [*SEARCH[:-7], "--accuracy",
                                    f"supernet:imagefolder:{_broken_image(s)}",
                                    *SEARCH[-5:], "--out", str(s.out)],
     "cannot read {root}/inputs/pets/dogs/broken.png"),
    # pretrained weights and validation images
    ("checkpoint of another architecture", lambda s: [
        "measure", "--no-latency", "--arch", "deit_tiny", "--weights", _deit_tiny(s, wider=True)],
     "cls_token is 1×1×200 in the checkpoint, 1×1×192 in the model"),
    ("checkpoint that is not a state dict", lambda s: [
        "measure", "--no-latency", "--weights", _saved(s, "list.pth", ["a list", "of strings"])],
     "list.pth: expected a state dict (names to tensors)"),
    ("checkpoint that would run code", lambda s: [
        "measure", "--no-latency", "--weights", _saved(s, "code.pth", {"x": Sandbox})],
     "code.pth: not a state dict of tensors that can be read without running code"),
    ("empty class folder of validation images", lambda s: [
        "measure", "--no-latency", "--arch", "deit_tiny", "--weights", _deit_tiny(s),
        "--data", f"imagefolder:{_empty_class(s)}"],
     "class folder 'fish' holds no images"),
    ("unreadable validation image", lambda s: [
        "measure", "--no-latency", "--arch", "deit_tiny", "--weights", _deit_tiny(s),
        "--data", f"imagefolder:{_broken_image(s)}"],
     "cannot read {root}/inputs/pets/dogs/broken.png"),
    ("weights with a space that varies architecture", lambda s: [
        *SEARCH[:-7], "--weights", _deit_tiny(s), "--data", f"imagefolder:{_broken_image(s)}",
        *SEARCH[-5:], "--space", "vit_tiny", "--out", str(s.out)],
     "space vit_tiny varies embed_dim, depth, num_heads, mlp_ratio, which would need training"),
    # a database that cannot be reached: one line, and never its password
    ("unreachable database", lambda s: ["report", str(s.out), "--storage",
                                        f"postgresql://harness:{PASSWORD}@127.0.0.1:1/harness"],
     "cannot open storage 'postgresql://harness:***@127.0.0.1:1/harness'"),
    # files that are not UTF-8 text
    ("space not UTF-8", lambda s: [*SEARCH, "--space", s.file("space.yaml", NOT_UTF8),
                                   "--out", str(s.out)],
     "search space file {root}/inputs/space.yaml: not UTF-8 text (byte 0xe9 at offset 9)"),
    ("device not UTF-8", lambda s: ["measure", "--no-latency", "--device",
                                    s.file("fpga.yaml", NOT_UTF8)],
     "device file {root}/inputs/fpga.yaml: not UTF-8 text"),
    ("suite not UTF-8", lambda s: ["bench", "--suite", s.file("suite.yaml", NOT_UTF8),
                                   "--out", str(s.root / "results")],
     "suite file {root}/inputs/suite.yaml: not UTF-8 text"),
    ("config not UTF-8", lambda s: ["measure", "--no-latency", "--config",
                                    s.file("winner.json", NOT_UTF8)],
     "configuration file {root}/inputs/winner.json: not UTF-8 text"),
    ("compare input not UTF-8", lambda s: ["compare", s.file("base.json", NOT_UTF8),
                                           s.file("head.json", NOT_UTF8)],
     "result file {root}/inputs/base.json: not UTF-8 text"),
    ("annotations not UTF-8", lambda s: ["history", s.folder("results"), "--annotations",
                                         s.file("notes.yaml", NOT_UTF8),
                                         "--out", str(s.root / "history.html")],
     "annotations file {root}/inputs/notes.yaml: not UTF-8 text"),
    # a directory or a FIFO where a file is expected: named for what it is (and never read)
    ("space is a directory", lambda s: [*SEARCH, "--space", s.folder("space.yaml"),
                                        "--out", str(s.out)],
     "search space file {root}/inputs/space.yaml: is a directory, expected a file"),
    ("space is a FIFO", lambda s: [*SEARCH, "--space", s.fifo("space.yaml"), "--out", str(s.out)],
     "search space file {root}/inputs/space.yaml: is not a regular file (a FIFO"),
    ("config is a FIFO", lambda s: ["measure", "--no-latency", "--config", s.fifo("c.yaml")],
     "configuration file {root}/inputs/c.yaml: is not a regular file"),
    ("compare input is a FIFO", lambda s: ["compare", s.fifo("base.json"), s.fifo("head.json")],
     "result file {root}/inputs/base.json: is not a regular file"),
    ("HLS report is a FIFO", lambda s: ["hls", "show", s.fifo("x_csynth.xml")],
     "HLS report {root}/inputs/x_csynth.xml: is not a regular file"),
    ("accuracy table is a directory", lambda s: [*SEARCH, "--accuracy",
                                                 f"table:{s.folder('acc.csv')}", "--out",
                                                 str(s.out)],
     "accuracy table {root}/inputs/acc.csv: is a directory"),
    ("missing annotations", lambda s: ["history", s.folder("results"), "--annotations",
                                       str(s.root / "nope.yaml"),
                                       "--out", str(s.root / "h.html")],
     "annotations file {root}/nope.yaml: no such file"),
    # outputs that can never be written: refused before any work, nothing half-done
    ("search output unwritable", lambda s: [*SEARCH, "--storage", str(s.journal),
                                            "--out", s.under_a_file("x")],
     "output directory {root}/inputs/a-file/x: {root}/inputs/a-file is not a directory"),
    ("report output unwritable", lambda s: ["report", s.under_a_file("x"),
                                            "--storage", str(s.journal)],
     "output directory {root}/inputs/a-file/x: {root}/inputs/a-file is not a directory"),
    ("history output unwritable", lambda s: ["history", s.folder("results"),
                                             "--out", s.under_a_file("h.html")],
     "output file {root}/inputs/a-file/h.html: {root}/inputs/a-file is not a directory"),
    ("history output is a directory", lambda s: ["history", s.folder("results"),
                                                 "--out", s.folder("page")],
     "output file {root}/inputs/page: is a directory, expected a file name"),
    ("rank-check output unwritable", lambda s: ["rank-check", "--accuracy", "proxy:params",
                                                "--reference", "proxy:gmacs", "--n", "3",
                                                "--out", s.under_a_file("rank")],
     "output directory {root}/inputs/a-file/rank: {root}/inputs/a-file is not a directory"),
    ("bench output unwritable", lambda s: ["bench", "--out", s.under_a_file("results")],
     "results directory {root}/inputs/a-file/results:"),
    ("bench-knobs output unwritable", lambda s: ["bench-knobs", "--out", s.under_a_file("k")],
     "output directory {root}/inputs/a-file/k:"),
    ("compare output unwritable", lambda s: ["compare", s.folder("a"), s.folder("b"),
                                             "--out", s.under_a_file("c.md")],
     "output file {root}/inputs/a-file/c.md:"),
    ("hls synth output unwritable", lambda s: ["hls", "synth", "--device", "zcu102",
                                               "--out", s.under_a_file("k")],
     "kernel project directory {root}/inputs/a-file/k:"),
    # values that were accepted silently
    ("negative clock", lambda s: ["hls", "import", s.folder("hls"), "--device", "zcu102",
                                  "--clock-mhz=-5"],
     "clock -5 MHz: expected MHz in (0, 2000]"),
    ("clock in Hz", lambda s: ["hls", "import", s.folder("hls"), "--device", "zcu102",
                               "--clock-mhz", "3e8"],
     "(given in Hz?)"),
    ("impossible latency budget", lambda s: [*SEARCH[:-5], "--budget", "0.001ms", "--study",
                                             STUDY, "--out", str(s.out)],
     "latency budget '0.001ms' is below 0.01 ms"),
    ("negative budget", lambda s: [*SEARCH[:-5], "--budget", "-3ms", "--out", str(s.out)],
     "budget '-3ms' must be positive"),
    ("negative trials", lambda s: [*SEARCH, "--trials", "-3", "--out", str(s.out)],
     "--trials must be positive, got -3"),
    ("report of a missing journal", lambda s: ["report", str(s.out), "--storage",
                                               str(s.root / "nowhere.journal")],
     "nowhere.journal"),
    # a study resumed with other settings is refused, not mixed
    ("another budget on the same study", lambda s: [*SEARCH[:-5], "--budget", "2gflop",
                                                    "--study", STUDY, "--out", str(s.out)],
     f"study '{STUDY}' already exists with a different budgets"),
]


@pytest.mark.parametrize(("make_args", "message"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(make_args: Case, message: str,
                                                          sandbox: Sandbox, capsys):
    args = make_args(sandbox)
    tree, journal, trials = _tree(sandbox.root), sandbox.journal.read_bytes(), _trials(
        sandbox.journal)
    capsys.readouterr()

    code = main(args)

    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("harness: error: ") and captured.err.count("\n") == 1, (
        captured.err)
    assert "Traceback" not in captured.err and captured.out == ""
    assert message.format(root=sandbox.root) in captured.err
    assert PASSWORD not in captured.err
    assert sandbox.journal.read_bytes() == journal and _trials(sandbox.journal) == trials
    assert _tree(sandbox.root) == tree  # nothing created, changed or removed anywhere


def _loading_torch(pid: int) -> bool:
    """Whether the process has reached the harness's own imports (torch's library is mapped)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(sandbox):
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", *SEARCH, "--out", str(sandbox.root / "new")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _loading_torch(process.pid) and process.poll() is None:
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.startswith("harness: interrupted") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""


def test_names_that_would_escape_become_safe_folders(sandbox, capsys):
    """A study or space name is text, not a path: its default folder stays under reports/."""
    space = sandbox.file("space.yaml", "name: /tmp/escaped\nparams: {embed_dim: [192, 216], "
                                       "depth: 6, precision: int8}\n")
    assert main([*SEARCH[:-3], "--study", "../../../outside", "--trials", "1",
                 "--space", space]) == 0
    err = capsys.readouterr().err
    assert ("note: study name '../../../outside' is not a safe file name; its files go under "
            "'outside'") in err
    work = sandbox.root / "work"
    assert (work / "reports" / "outside" / "report.html").is_file()
    assert main([*SEARCH[:-3], "--trials", "1", "--space", space]) == 0
    assert "its files go under 'tmp-escaped-zcu102-1gflop'" in capsys.readouterr().err
    assert (work / "reports" / "tmp-escaped-zcu102-1gflop" / "report.html").is_file()
    assert sorted(p.name for p in sandbox.root.iterdir()) == ["data", "inputs", "out", "tmp",
                                                              "work"]
    assert not Path("/tmp/escaped-zcu102-1gflop").exists()


def test_a_suite_name_cannot_escape_the_results_directory(sandbox, fast_device_file, capsys):
    suite = sandbox.file("suite.yaml", "name: ../../escaped\nmeasurement: {energy: false}\n"
                         "entries: [{name: tiny, arch: deit_tiny, set: {depth: 1}}]\n")
    results = sandbox.root / "results"
    assert main(["bench", "--suite", suite, "--device", str(fast_device_file),
                 "--out", str(results)]) == 0
    assert "suite name '../../escaped' is not a safe file name" in capsys.readouterr().err
    [written] = results.rglob("*.json")
    assert written.parent.name == "escaped" and written.is_relative_to(results)
