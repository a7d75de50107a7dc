"""HLS kernel generation and the C-synthesis runner (``harness.fpga.synth``).

Neither Vitis HLS nor its headers exist here, so the C++ is checked at the syntax level and
against the cost model's cycle counts, and the runner is driven by a stand-in ``vitis_hls`` that
does what the real tool's Tcl script asks for: it writes ``<top>_csynth.xml`` where the script
puts it (a project fixture with the top, part and clock filled in).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.fpga.hls_reports import find_reports
from harness.fpga.kernels import KernelSpec, kernel
from harness.fpga.synth import (
    TOOL_MISSING_MESSAGE,
    HlsToolMissing,
    SynthesisError,
    find_hls_tool,
    kernel_source,
    run_synthesis,
    synthesize,
    write_kernel_project,
)

FIXTURE = Path(__file__).parent / "fixtures" / "hls" / "vitis_2022_2_matmul_csynth.xml"
PART = "xczu9eg-ffvb1156-2-e"
CLOCK_NS = 3.33
SPECS = {
    "matmul": kernel("matmul", n=197, k=192, m=576, pe=16, simd=12, b=8),
    "softmax": kernel("softmax", r=591, c=197, l=4, b=16),
    "layernorm": kernel("layernorm", r=197, c=192, l=4, b=16),
    "gelu": kernel("gelu", r=197, c=768, l=3, b=16),
}
MATH_CALLS = {"softmax": "hls::exp(", "layernorm": "hls::sqrt(", "gelu": "hls::tanh("}

# A stand-in for vitis_hls: run with -f SCRIPT in the project directory, it follows the script's
# open_project, open_solution, set_top, set_part and create_clock, and writes the csynth report
# where the real tool would. It logs its command line and working directory first.
FAKE_TOOL = """#!{python}
import re, sys
from pathlib import Path

print("fake vitis_hls", " ".join(sys.argv[1:]), "in", Path.cwd())
script = Path(sys.argv[sys.argv.index("-f") + 1]).read_text()
def last_word(command):
    return re.search(rf"^{{command}}\\b.*?(\\S+)$", script, re.M).group(1).strip("{{}}")
project, solution = last_word("open_project"), last_word("open_solution")
top, part = last_word("set_top"), last_word("set_part")
period = re.search(r"^create_clock -period (\\S+)", script, re.M).group(1)
report = Path(project, solution, "syn", "report", top + "_csynth.xml")
report.parent.mkdir(parents=True)
text = Path({fixture!r}).read_text()
for tag, value in (("TopModelName", top), ("Part", part), ("TargetClockPeriod", period)):
    text = re.sub(f"<{{tag}}>[^<]*</{{tag}}>", f"<{{tag}}>{{value}}</{{tag}}>", text)
report.write_text(text)
"""


def install_tool(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(body)
    tool.chmod(0o755)
    return tool


@pytest.fixture
def tool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An otherwise empty directory that is the whole PATH, to put stand-in tools in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def fake_vitis_hls(tool_dir: Path) -> Path:
    return install_tool(tool_dir, "vitis_hls",
                        FAKE_TOOL.format(python=sys.executable, fixture=str(FIXTURE)))


def without_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", source)


def int_constants(source: str) -> dict[str, int]:
    """The ``static const int`` constants of a kernel, evaluated with C's integer division."""
    values: dict[str, int] = {}
    for name, expression in re.findall(r"static const int (\w+) = ([^;]+);", source):
        arithmetic = re.sub(r"[A-Z_]+", lambda match: str(values[match.group()]), expression)
        assert re.fullmatch(r"[\d\s+\-*/()]+", arithmetic), expression
        values[name] = eval(arithmetic.replace("/", "//"))  # digits and operators only
    return values


# --- generated projects ---------------------------------------------------------------------


@pytest.mark.parametrize("operator", SPECS)
def test_project_has_the_spec_named_top_the_tcl_steps_and_the_lane_constants(
        operator: str, tmp_path: Path):
    spec = SPECS[operator]
    project_dir = write_kernel_project(spec, PART, CLOCK_NS, tmp_path)

    assert project_dir == tmp_path / spec.name
    source = (project_dir / f"{spec.name}.cpp").read_text()
    assert re.findall(r"\bvoid (\w+)\(", source) == [spec.name]
    # Every parameter of the name, the PE/SIMD or lane counts included, is a constant of the C++.
    constants = int_constants(source)
    assert {name.upper(): value for name, value in spec.params.items()}.items() <= constants.items()
    assert "#pragma HLS PIPELINE II=1" in source
    tcl = (project_dir / "run_hls.tcl").read_text().splitlines()
    assert tcl[1:] == [
        "open_project -reset hls_project",
        f"set_top {spec.name}",
        f"add_files {spec.name}.cpp",
        "open_solution -reset -flow_target vivado solution1",
        f"set_part {{{PART}}}",
        f"create_clock -period {CLOCK_NS} -name default",
        "csynth_design",
        "exit",
    ]


@pytest.mark.parametrize("operator", SPECS)
def test_kernel_fold_loops_take_the_cost_models_ideal_cycles(operator: str):
    spec = SPECS[operator]
    constants = int_constants(kernel_source(spec))
    if operator == "matmul":
        folds = constants["N"] * constants["NEURON_FOLDS"] * constants["SYNAPSE_FOLDS"]
    else:
        folds = constants["R"] * constants["FOLDS"]
    assert folds == spec.ideal_cycles


@pytest.mark.parametrize("operator", SPECS)
def test_kernel_source_is_well_formed_hls_cpp(operator: str):
    source = kernel_source(SPECS[operator])
    code = without_comments(source)

    assert "$" not in source  # every template placeholder was filled
    for opening, closing in ("()", "{}", "[]"):
        assert code.count(opening) == code.count(closing), opening
    assert set(re.findall(r"#pragma HLS (\w+)", code)) <= {"PIPELINE", "ARRAY_PARTITION", "UNROLL"}
    declared = set(re.findall(r"\b(\w+)\[", code))
    partitioned = re.findall(r"#pragma HLS ARRAY_PARTITION variable=(\w+)", code)
    assert partitioned and set(partitioned) <= declared
    includes = re.findall(r"#include <(\S+)>", code)
    if operator == "matmul":
        assert includes == ["ap_int.h"] and "ap_int<ACC_BITS>" in code
    else:
        assert includes == ["ap_fixed.h", "hls_math.h"] and MATH_CALLS[operator] in code


def test_derived_widths_hold_the_sums():
    matmul = kernel_source(SPECS["matmul"])
    # 8-bit products take 16 bits; a sum of 192 of them 8 more.
    assert "static const int ACC_BITS = 24;" in matmul
    softmax = kernel_source(SPECS["softmax"])
    assert "static const int SUM_INT_BITS = 8;" in softmax  # 197 < 2^8
    layernorm = kernel_source(SPECS["layernorm"])
    assert "static const stat_t EPSILON = 1.52587890625e-05;" in layernorm  # 2^-16


def test_vivado_hls_script_opens_the_solution_without_the_vitis_flag(tmp_path: Path):
    project_dir = write_kernel_project(SPECS["gelu"], PART, 10.0, tmp_path, tool="vivado_hls")
    tcl = (project_dir / "run_hls.tcl").read_text()
    assert "open_solution -reset solution1\n" in tcl
    assert "-flow_target" not in tcl
    assert "create_clock -period 10 -name default\n" in tcl


@pytest.mark.parametrize(("spec", "part", "clock_ns", "message"), [
    (SPECS["gelu"], "xc7z020; exec rm", 10.0, "is not an FPGA part name"),
    (SPECS["gelu"], PART, 0.0, "clock period must be positive"),
    (kernel("softmax", r=4, c=8, l=2, b=40), PART, 10.0, "softmax kernels take 4 to 32 bits"),
])
def test_unusable_project_settings_are_refused_before_anything_is_written(
        spec: KernelSpec, part: str, clock_ns: float, message: str, tmp_path: Path):
    with pytest.raises(SynthesisError, match=message):
        write_kernel_project(spec, part, clock_ns, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- finding and running the tool -----------------------------------------------------------


def test_find_hls_tool_prefers_vitis_hls_over_vivado_hls(tool_dir: Path):
    assert find_hls_tool() is None
    vivado = install_tool(tool_dir, "vivado_hls", "#!/bin/sh\n")
    assert find_hls_tool() == str(vivado)
    vitis = install_tool(tool_dir, "vitis_hls", "#!/bin/sh\n")
    assert find_hls_tool() == str(vitis)


def test_synthesize_without_a_tool_says_what_to_install_or_import(tool_dir: Path, tmp_path: Path):
    with pytest.raises(HlsToolMissing) as raised:
        synthesize([SPECS["gelu"]], PART, CLOCK_NS, tmp_path / "out")
    assert str(raised.value) == TOOL_MISSING_MESSAGE
    assert "harness hls import" in str(raised.value)
    assert isinstance(raised.value, HarnessError)
    assert not (tmp_path / "out").exists()


def test_synthesize_with_a_named_tool_that_is_missing(tool_dir: Path, tmp_path: Path):
    with pytest.raises(HlsToolMissing, match="vivado_hls: not found"):
        synthesize([SPECS["gelu"]], PART, CLOCK_NS, tmp_path, tool="vivado_hls")


def test_synthesize_runs_the_tool_per_kernel_and_leaves_reports_find_reports_reads(
        fake_vitis_hls: Path, tmp_path: Path):
    specs = [SPECS["matmul"], SPECS["softmax"]]
    messages: list[str] = []

    project_dirs = synthesize(specs, PART, CLOCK_NS, tmp_path / "out", on_progress=messages.append)

    assert project_dirs == [tmp_path / "out" / spec.name for spec in specs]
    assert messages == [f"[1/2] C synthesis of {specs[0].name} with vitis_hls",
                        f"[2/2] C synthesis of {specs[1].name} with vitis_hls"]
    for spec, project_dir in zip(specs, project_dirs):
        log = (project_dir / "hls.log").read_text()
        assert log == f"fake vitis_hls -f run_hls.tcl in {project_dir}\n"
        records, skipped = find_reports(project_dir)
        assert skipped == []
        assert [(record.top, record.part, record.clock_target_ns) for record in records] == [
            (spec.name, PART, CLOCK_NS)]
        assert Path(records[0].source).parent == (
            project_dir / "hls_project" / "solution1" / "syn" / "report")


def test_run_synthesis_returns_the_directory_the_script_writes_reports_to(
        fake_vitis_hls: Path, tmp_path: Path):
    spec = SPECS["gelu"]
    project_dir = write_kernel_project(spec, PART, CLOCK_NS, tmp_path)

    report_dir = run_synthesis(project_dir, str(fake_vitis_hls))

    assert report_dir == project_dir / "hls_project" / "solution1" / "syn" / "report"
    assert [path.name for path in report_dir.iterdir()] == [f"{spec.name}_csynth.xml"]


def test_a_failing_tool_names_the_kernel_the_exit_code_and_the_log(tool_dir: Path,
                                                                    tmp_path: Path):
    install_tool(tool_dir, "vitis_hls",
                 "#!/bin/sh\necho 'ERROR: [HLS 207-3776] use of undeclared identifier' >&2\n"
                 "exit 1\n")
    spec = SPECS["layernorm"]

    with pytest.raises(SynthesisError) as raised:
        synthesize([spec], PART, CLOCK_NS, tmp_path)

    log_path = tmp_path / spec.name / "hls.log"
    assert str(raised.value) == f"C synthesis of {spec.name} failed with exit code 1; log: {log_path}"
    assert "use of undeclared identifier" in log_path.read_text()


def test_a_tool_that_exits_0_without_a_report_is_a_failure(tool_dir: Path, tmp_path: Path):
    install_tool(tool_dir, "vitis_hls", "#!/bin/sh\necho 'ERROR: [HLS 200-70] part not found'\n")
    spec = SPECS["gelu"]
    with pytest.raises(SynthesisError, match=f"wrote no {spec.name}_csynth.xml .*log: "):
        synthesize([spec], PART, CLOCK_NS, tmp_path)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states in /proc")
def test_a_tool_past_its_timeout_is_stopped_with_the_processes_it_started(tool_dir: Path,
                                                                          tmp_path: Path):
    # Like the real launcher script, the stand-in leaves the work to a process of its own.
    worker_pid = tmp_path / "worker.pid"
    install_tool(tool_dir, "vitis_hls", f"""#!{sys.executable}
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(worker_pid)!r}, "w").write(str(worker.pid))
time.sleep(60)
""")
    spec = SPECS["gelu"]

    with pytest.raises(SynthesisError, match=f"C synthesis of {spec.name} timed out after 1 s"):
        synthesize([spec], PART, CLOCK_NS, tmp_path, timeout_s=1)

    assert not is_running(int(worker_pid.read_text()))


def is_running(pid: int) -> bool:
    """Whether ``pid`` is alive: a killed process whose parent is gone may stay a zombie."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


# --- harness hls synth --------------------------------------------------------------------------

def test_hls_synth_cli_synthesizes_a_candidates_kernels_and_imports_them(
        fake_vitis_hls: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from harness.cli import main
    from harness.fpga.calibration import load_entries

    out = tmp_path / "kernels"
    args = ["hls", "synth", "--device", "zcu102", "--arch", "deit_tiny", "--set",
            "precision=int8", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    projects = sorted(path.name for path in out.iterdir())
    assert "hk_matmul_n197_k192_m576_pe64_simd32_b8" in projects  # the qkv Linear
    assert {"hk_softmax_r591_c197_l8_b16", "hk_gelu_r197_c768_l8_b16"} <= set(projects)
    assert f"[1/{len(projects)}] C synthesis of" in captured.err
    assert {entry["record"]["top"] for entry in load_entries("zcu102")} == set(projects)


def test_hls_synth_cli_without_tools_writes_the_projects_and_says_it_skipped(
        tool_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from harness.cli import main

    out = tmp_path / "kernels"
    assert main(["hls", "synth", "--device", "pynq-z2", "--set", "precision=int8",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"harness: hls synth skipped: {TOOL_MISSING_MESSAGE}")
    assert f"harness hls import {out} --device pynq-z2" in err
    assert all((project / "run_hls.tcl").is_file() for project in out.iterdir())
