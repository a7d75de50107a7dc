"""Generate the harness's HLS kernels for a candidate and run C synthesis on them.

The FPGA cost model is calibrated from csynth reports of its four operators. When Vitis HLS or
Vivado HLS is installed, ``harness hls synth`` writes one small parameterized project per kernel
(C++ from ``hls_templates/`` plus a Tcl script), runs the tool on it and leaves the reports where
``find_reports`` reads them. Without the tools, reports synthesized elsewhere are imported instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from string import Template

from harness.errors import HarnessError, shorten
from harness.fpga.kernels import KernelSpec

# Vitis HLS first: Vivado HLS stopped at 2020.1.
HLS_TOOLS = ("vitis_hls", "vivado_hls")
TCL_SCRIPT = "run_hls.tcl"
LOG_FILE = "hls.log"
HLS_PROJECT = "hls_project"
SOLUTION = "solution1"
# hls_math's fixed-point functions take at most 32 fractional bits, and the softmax, LayerNorm
# and GELU kernels give B/2 bits to the integer part: below 4 bits little is left for fractions.
FIXED_POINT_BITS = range(4, 33)
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]*"

TOOL_MISSING_MESSAGE = (
    "neither vitis_hls nor vivado_hls is on PATH; install Vitis HLS or Vivado HLS (2018.2+) and "
    "source its settings64.sh, or import reports synthesized elsewhere with 'harness hls import'"
)


class HlsToolMissing(HarnessError):
    """No HLS tool to synthesize with."""


class SynthesisError(HarnessError):
    """A kernel project cannot be written, or its C synthesis failed."""


def find_hls_tool() -> str | None:
    """The path of ``vitis_hls``, else of ``vivado_hls``; ``None`` when neither is on PATH."""
    for name in HLS_TOOLS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def write_kernel_project(spec: KernelSpec, part: str, clock_ns: float, out_dir: Path,
                         tool: str = "vitis_hls") -> Path:
    """Write ``out_dir/<spec.name>/`` with the kernel's C++ (top function ``spec.name``) and the
    Tcl script that synthesizes it with ``tool``; return that directory."""
    if re.fullmatch(_PART, part) is None:
        raise SynthesisError(f"{shorten(part)} is not an FPGA part name (like "
                             "xczu9eg-ffvb1156-2-e)")
    if not clock_ns > 0:
        raise SynthesisError(f"clock period must be positive, got {clock_ns} ns")
    if spec.operator != "matmul" and spec.params["b"] not in FIXED_POINT_BITS:
        raise SynthesisError(
            f"{spec.name}: {spec.operator} kernels take {FIXED_POINT_BITS.start} to "
            f"{FIXED_POINT_BITS.stop - 1} bits, got {spec.params['b']}")
    project_dir = Path(out_dir) / spec.name
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / f"{spec.name}.cpp").write_text(kernel_source(spec))
    (project_dir / TCL_SCRIPT).write_text(_tcl_script(spec.name, part, clock_ns, tool))
    return project_dir


def kernel_source(spec: KernelSpec) -> str:
    """The kernel's HLS C++: its operator's template with the parameters filled in."""
    template = resources.files("harness.fpga").joinpath("hls_templates", f"{spec.operator}.cpp")
    params = spec.params
    # Widths C++98 cannot compute at compile time; each template says what its value holds.
    values = {"top": spec.name, **params}
    if spec.operator == "matmul":
        values["acc_bits"] = 2 * params["b"] + (params["k"] - 1).bit_length()
    elif spec.operator == "softmax":
        values["sum_int_bits"] = params["c"].bit_length()
    elif spec.operator == "layernorm":
        values["growth_bits"] = params["c"].bit_length()
        values["epsilon"] = repr(2.0 ** -params["b"])
    return Template(template.read_text()).substitute(values)


def run_synthesis(project_dir: Path, tool: str, timeout_s: float | None = None) -> Path:
    """Run ``tool -f run_hls.tcl`` in ``project_dir``, logging to ``hls.log`` there; return the
    directory of the csynth reports."""
    project_dir = Path(project_dir)
    top = project_dir.name
    log_path = project_dir / LOG_FILE
    with log_path.open("w") as log:
        try:
            # A session of its own, so that a timeout also stops the processes the tool starts
            # (vitis_hls is a launcher script around the real binary).
            process = subprocess.Popen([tool, "-f", TCL_SCRIPT], cwd=project_dir, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        except OSError as error:
            raise SynthesisError(f"cannot run {tool} for {top}: {error.strerror}") from None
        try:
            return_code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_process_group(process)
            raise SynthesisError(f"C synthesis of {top} timed out after {timeout_s:g} s; "
                                 f"log: {log_path}") from None
    if return_code != 0:
        raise SynthesisError(f"C synthesis of {top} failed with exit code {return_code}; "
                             f"log: {log_path}")
    report_dir = project_dir / HLS_PROJECT / SOLUTION / "syn" / "report"
    # Some tool versions exit 0 after an error in the Tcl script.
    if not (report_dir / f"{top}_csynth.xml").is_file():
        raise SynthesisError(f"C synthesis of {top} wrote no {top}_csynth.xml in {report_dir}; "
                             f"log: {log_path}")
    return report_dir


def synthesize(specs: Sequence[KernelSpec], part: str, clock_ns: float, out_dir: Path,
               tool: str | None = None, on_progress: Callable[[str], None] | None = None,
               timeout_s: float | None = None) -> list[Path]:
    """Write and synthesize each kernel under ``out_dir``; return the project directories.

    ``tool`` is a name or path, else the one ``find_hls_tool`` finds; ``timeout_s`` bounds each
    kernel's synthesis. Raises ``HlsToolMissing`` when there is no tool to run.
    """
    tool_path = shutil.which(tool) if tool else find_hls_tool()
    if tool_path is None:
        raise HlsToolMissing(f"{tool}: not found or not executable" if tool
                             else TOOL_MISSING_MESSAGE)
    tool_name = Path(tool_path).name
    project_dirs = []
    for number, spec in enumerate(specs, start=1):
        if on_progress is not None:
            on_progress(f"[{number}/{len(specs)}] C synthesis of {spec.name} with {tool_name}")
        project_dir = write_kernel_project(spec, part, clock_ns, out_dir, tool=tool_name)
        run_synthesis(project_dir, tool_path, timeout_s=timeout_s)
        project_dirs.append(project_dir)
    return project_dirs


def _stop_process_group(process: subprocess.Popen) -> None:
    if hasattr(os, "killpg"):
        os.killpg(process.pid, signal.SIGKILL)
    else:  # Windows has no process groups to signal.
        process.kill()
    process.wait()


def _tcl_script(top: str, part: str, clock_ns: float, tool: str) -> str:
    # Vitis HLS targets a Vivado IP (not a Vitis kernel) only if asked; Vivado HLS has no flag.
    flow_target = "-flow_target vivado " if Path(tool).name.startswith("vitis_hls") else ""
    return (
        f"# C synthesis of {top}; run from this directory: {tool} -f {TCL_SCRIPT}\n"
        f"open_project -reset {HLS_PROJECT}\n"
        f"set_top {top}\n"
        f"add_files {top}.cpp\n"
        f"open_solution -reset {flow_target}{SOLUTION}\n"
        f"set_part {{{part}}}\n"
        f"create_clock -period {clock_ns:g} -name default\n"
        "csynth_design\n"
        "exit\n"
    )
