"""Benchmark two git revisions in one job, interleaved: ``harness compare --base-rev --head-rev``.

Noise between jobs (a 26% shift in one public report) dwarfs noise within one, so both revisions
are installed side by side and measured in alternating rounds (base, head, head, base, ...) on the
same machine. Each revision is exported with ``git archive`` and installed without dependencies
into its own directory; each round runs ``harness bench`` of that revision in a fresh interpreter
that sees only that install plus this environment's site-packages (``python -S``, so the
editable install of the working tree cannot shadow it).

The number of rounds adapts (``compare_sequentially``): a first batch, then, while an entry
cannot yet tell a change of its threshold from noise, as many more as its rounds' scatter asks
for, up to a cap. On a 2-core VM a round's head/base ratio scattered by 1.4-6% from one hour to
the next: 6 rounds resolve a 5% change in a quiet hour, not in a noisy one.
"""

from __future__ import annotations

import dataclasses
import json
import site
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.bench.compare import Comparison, SequentialRounds
from harness.errors import HarnessError, shorten

DEFAULT_MAX_ROUNDS = 20  # rounds a side at most, while an entry stays noisy

# Runs `harness` of one install: argv = [install dir, site-packages JSON, harness arguments...]
_BOOTSTRAP = (
    "import json, sys; sys.path[:0] = [sys.argv[1], *json.loads(sys.argv[2])]; "
    "from harness.cli import main; sys.exit(main(sys.argv[3:]))"
)


class RevisionError(HarnessError):
    """A revision cannot be resolved, installed or benchmarked."""


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()
    except subprocess.CalledProcessError as error:
        detail = (error.stderr.strip().splitlines() or [f"exit code {error.returncode}"])[-1]
        raise RevisionError(f"git {' '.join(args)} in {repo}: {detail}") from None
    except OSError as error:
        raise RevisionError(f"cannot run git: {error.strerror}") from None


def install_revision(repo: Path, rev: str, workdir: Path) -> tuple[str, Path]:
    """Resolve ``rev`` in ``repo``, export and install it under ``workdir``; (commit, install)."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RevisionError:
        raise RevisionError(f"unknown revision {shorten(rev)} in {repo}") from None
    source, install = workdir / f"src-{commit[:12]}", workdir / f"site-{commit[:12]}"
    archive = workdir / f"{commit[:12]}.tar"
    _git(repo, "archive", "--format=tar", f"--output={archive}", commit)
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--target", str(install), str(source)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RevisionError(f"cannot install revision {rev} ({commit[:12]}): {last}")
    return commit, install


class InterleavedRevisions:
    """Two revisions installed side by side (a context manager: the installs live until it
    exits), benchmarked in alternating rounds: ``run_until(n)`` runs rounds up to n a side, and
    may be called again to add rounds. Results go to ``out_dir/base`` and ``out_dir/head``."""

    def __init__(self, repo: Path, base_rev: str, head_rev: str, suite: str, device: str,
                 out_dir: Path, on_round: Callable[[str], None] | None = None) -> None:
        self.repo, self.revs = repo, {"base": base_rev, "head": head_rev}
        self.suite, self.device, self.out_dir, self.on_round = suite, device, out_dir, on_round
        self.rounds = 0
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._sides: dict[str, tuple[str, Path]] = {}

    def __enter__(self) -> InterleavedRevisions:
        self._workdir = tempfile.TemporaryDirectory(prefix="harness-revisions-")
        try:
            for side, rev in self.revs.items():
                self._sides[side] = install_revision(self.repo, rev, Path(self._workdir.name))
        except BaseException:
            self._workdir.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._workdir:
            self._workdir.cleanup()

    @property
    def results(self) -> tuple[Path, Path]:
        return self.out_dir / "base", self.out_dir / "head"

    def run_until(self, rounds: int) -> None:
        """Benchmark the suite on both revisions until each has ``rounds`` rounds, alternating
        which goes first (base, head, head, base, ...)."""
        site_packages = json.dumps(site.getsitepackages())
        while self.rounds < rounds:
            order = ("base", "head") if self.rounds % 2 == 0 else ("head", "base")
            for side in order:
                commit, install = self._sides[side]
                if self.on_round:
                    self.on_round(f"round {self.rounds + 1}/{rounds}: {side} ({commit[:12]})")
                done = subprocess.run(
                    [sys.executable, "-S", "-c", _BOOTSTRAP, str(install), site_packages,
                     "bench", "--suite", self.suite, "--device", self.device, "--out",
                     str(self.out_dir / side), "--rounds", "1"],
                    capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RevisionError(f"harness bench of {side} revision {commit[:12]} failed: "
                                        f"{last}")
            self.rounds += 1


def compare_sequentially(revisions: InterleavedRevisions, first: int, max_rounds: int,
                         compare: Callable[[float], Comparison], alpha: float = 0.01,
                         on_more: Callable[[str], None] | None = None) -> Comparison:
    """Run ``first`` rounds and compare (``compare(alpha)`` reads the results); while an entry
    paired by round is noisy, its interval reaching past its threshold, run as many rounds as
    its rounds' scatter says would resolve it (``Comparison.rounds_needed``), at most
    ``max_rounds``, and compare again. Two looks at the data: each tests at alpha / 2."""
    plan = SequentialRounds(first, first, max_rounds, [])
    alpha_per_look = alpha / plan.looks
    revisions.run_until(first)
    comparison = compare(alpha_per_look)
    noisy = comparison.noisy_paired
    if noisy and plan.looks > 1:
        wanted = min(max_rounds, max(comparison.rounds_needed(e) or max_rounds for e in noisy))
        if wanted > first:
            if on_more:
                on_more(f"{', '.join(e.name for e in noisy)} noisy after {first} rounds: "
                        f"running to {wanted} (at most {max_rounds})")
            revisions.run_until(wanted)
            comparison = compare(alpha_per_look)
    plan = SequentialRounds(first, revisions.rounds, max_rounds, [e.name for e in noisy])
    return dataclasses.replace(comparison, sequential=plan)
