"""Benchmark two git revisions in one job, interleaved: ``harness compare --base-rev --head-rev``.

Noise between jobs (a 26% shift in one public report) dwarfs noise within one, so both revisions
are installed side by side and measured in alternating rounds (base, head, head, base, ...) on the
same machine. Each revision is exported with ``git archive`` and installed without dependencies
into its own directory; each round runs ``harness bench`` of that revision in a fresh interpreter
that sees only that install plus this environment's site-packages (``python -S``, so the
editable install of the working tree cannot shadow it).
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError, shorten

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


def bench_interleaved(repo: Path, base_rev: str, head_rev: str, suite: str, device: str,
                      rounds: int, out_dir: Path,
                      on_round: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Benchmark ``suite`` on both revisions, ``rounds`` rounds each, alternating which goes
    first; return the (base, head) result directories."""
    site_packages = json.dumps(site.getsitepackages())
    sides = {}
    with tempfile.TemporaryDirectory(prefix="harness-revisions-") as workdir:
        for side, rev in (("base", base_rev), ("head", head_rev)):
            sides[side] = install_revision(repo, rev, Path(workdir))
        for round_index in range(rounds):
            order = ("base", "head") if round_index % 2 == 0 else ("head", "base")
            for side in order:
                commit, install = sides[side]
                if on_round:
                    on_round(f"round {round_index + 1}/{rounds}: {side} ({commit[:12]})")
                done = subprocess.run(
                    [sys.executable, "-S", "-c", _BOOTSTRAP, str(install), site_packages,
                     "bench", "--suite", suite, "--device", device, "--out",
                     str(out_dir / side), "--rounds", "1"],
                    capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RevisionError(f"harness bench of {side} revision {commit[:12]} failed: "
                                        f"{last}")
    return out_dir / "base", out_dir / "head"
