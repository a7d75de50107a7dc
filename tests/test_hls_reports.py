"""HLS and Vivado report parsers and ``hls_show``, on hand-written fixtures of every format variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.fpga import HlsReportError, detect_kind, find_reports, hls_show, parse_report
from harness.records import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "hls"
RESOURCE_KEYS = {"BRAM_18K", "DSP", "FF", "LUT", "URAM"}
COMMON_KEYS = {
    "schema_version", "kind", "source", "tool", "tool_version", "part", "top", "clock_target_ns",
    "clock_estimated_ns", "latency_cycles", "interval", "pipeline_type", "resources", "available",
    "loops", "cosim_latency", "utilization", "power_w",
}


def parse(name: str) -> dict:
    return parse_report(FIXTURES / name).to_dict()


def loop(record: dict, name: str) -> dict:
    return next(item for item in record["loops"] if item["name"] == name)


# --- csynth XML ------------------------------------------------------------------------------


def test_vivado_2018_artix_xml_undef_average_missing_uram_ranges_and_dotted_nested_loop():
    record = parse("vivado_2018_3_artix_csynth.xml")
    assert (record["kind"], record["tool"], record["tool_version"]) == ("csynth", "vivado_hls", "2018.3")
    assert (record["part"], record["top"]) == ("xc7a35t-cpg236-1", "scale_rows")
    assert (record["clock_target_ns"], record["clock_estimated_ns"]) == (10.0, 8.51)
    assert record["latency_cycles"] == {"best": 12, "avg": None, "worst": 3846}
    assert record["interval"] == {"min": 13, "max": 3847}
    assert record["resources"] == {"BRAM_18K": 0, "DSP": 1, "FF": 145, "LUT": 212, "URAM": None}
    assert record["available"]["URAM"] is None and record["available"]["DSP"] == 90
    outer, inner = loop(record, "Loop1"), loop(record, "Loop1.1")
    assert outer["trip_count"] == {"min": 1, "max": 961}
    assert outer["latency"] == {"min": 10, "max": 3844}
    assert (outer["ii"], outer["depth"], outer["parent"]) == (None, 4, None)
    assert inner["parent"] == "Loop1" and inner["trip_count"] == {"min": 2, "max": 2}


def test_vivado_2020_xml_says_dsp48e_and_pipelined_loop_latency_checks_out():
    record = parse("vivado_2020_1_matrixmul_csynth.xml")
    assert record["tool"] == "vivado_hls"
    assert record["resources"] == {"BRAM_18K": 0, "DSP": 3, "FF": 236, "LUT": 427, "URAM": 0}
    assert record["latency_cycles"] == {"best": 43, "avg": 43, "worst": 43}
    row_col = loop(record, "Row_Col")
    trip, ii, depth = row_col["trip_count"]["max"], row_col["ii"], row_col["depth"]
    assert (trip - 1) * ii + depth - 1 == row_col["latency"]["max"] == 41


def test_vitis_xml_reordered_resources_dsp_uram_latency_ranges_and_dotted_loop():
    record = parse("vitis_2022_2_matmul_csynth.xml")
    assert (record["tool"], record["tool_version"]) == ("vitis_hls", "2022.2")
    assert record["pipeline_type"] == "dataflow"
    assert record["latency_cycles"] == {"best": 30, "avg": None, "worst": 1954}
    assert record["interval"] == {"min": 28, "max": 1952}
    assert record["resources"] == {"BRAM_18K": 2, "DSP": 3, "FF": 230, "LUT": 489, "URAM": 0}
    assert record["available"] == {
        "BRAM_18K": 1824, "DSP": 2520, "FF": 548160, "LUT": 274080, "URAM": 0}
    dotted = loop(record, "VITIS_LOOP_35_2.2")
    assert (dotted["trip_count"]["max"], dotted["ii"], dotted["depth"]) == (27, 1, 2)
    assert dotted["latency"] == {"min": 27, "max": 27}


def test_aggregate_csynth_xml_takes_the_top_module_and_loops_of_every_module():
    record = parse("vitis_2023_2_aggregate_csynth.xml")
    assert record["top"] == "matmul" and record["tool"] == "vitis_hls"
    assert [module["name"] for module in record["modules"]] == [
        "matmul_Pipeline_VITIS_LOOP_35_2", "matmul"]
    assert record["latency_cycles"] == {"best": 43, "avg": 43, "worst": 43}
    assert record["resources"] == {"BRAM_18K": 2, "DSP": 3, "FF": 230, "LUT": 489, "URAM": 0}
    assert record["available"]["BRAM_18K"] == 1824 and record["available"]["DSP"] == 2520
    pipeline = loop(record, "VITIS_LOOP_35_2")
    assert pipeline["module"] == "matmul_Pipeline_VITIS_LOOP_35_2" and pipeline["ii"] == 1
    assert record["modules"][0]["resources"]["DSP"] == 3


# --- csynth text -----------------------------------------------------------------------------


def test_vivado_2018_rpt_bare_timing_numbers_question_marks_and_tilde_ranges():
    record = parse("vivado_2018_2_scale_rows_csynth.rpt")
    assert (record["tool"], record["tool_version"], record["top"]) == (
        "vivado_hls", "2018.2", "scale_rows")
    assert record["part"] == "xc7a35tcpg236-1"
    assert (record["clock_target_ns"], record["clock_estimated_ns"]) == (10.0, 8.51)
    assert record["latency_cycles"] == {"best": 12, "avg": None, "worst": 3846}
    assert record["pipeline_type"] == "none"
    assert record["resources"] == {"BRAM_18K": 0, "DSP": 1, "FF": 145, "LUT": 143, "URAM": None}
    assert record["available"]["DSP"] == 90
    outer, inner = loop(record, "Loop 1"), loop(record, "Loop 1.1")
    assert outer["trip_count"] == {"min": 1, "max": 961} and outer["ii"] is None
    assert inner["parent"] == "Loop 1" and inner["depth"] == 1


def test_vitis_rpt_timing_with_units_dsp_column_and_uram():
    record = parse("vitis_2022_2_matmul_csynth.rpt")
    assert record["tool"] == "vitis_hls"
    assert (record["clock_target_ns"], record["clock_estimated_ns"]) == (3.33, 2.436)
    assert record["interval"] == {"min": 44, "max": 44}
    assert record["resources"] == {"BRAM_18K": 2, "DSP": 3, "FF": 230, "LUT": 489, "URAM": 0}
    assert record["available"]["URAM"] == 0  # the ZU9EG has no UltraRAM
    assert loop(record, "VITIS_LOOP_35_2.2")["ii"] == 1


def test_vitis_summary_tree_rpt_reads_top_row_and_loops_under_their_module():
    record = parse("vitis_2023_2_summary_csynth.rpt")
    assert (record["tool"], record["tool_version"], record["top"]) == ("vitis_hls", "2023.2", "matmul")
    assert record["latency_cycles"] == {"best": 43, "avg": None, "worst": 43}
    assert record["resources"] == {"BRAM_18K": 2, "DSP": 3, "FF": 230, "LUT": 489, "URAM": None}
    dotted = loop(record, "VITIS_LOOP_35_2.2")
    assert dotted["module"] == "matmul_Pipeline_VITIS_LOOP_35_2"
    assert (dotted["trip_count"]["max"], dotted["ii"], dotted["depth"]) == (27, 1, 2)


# --- co-simulation ---------------------------------------------------------------------------


def test_cosim_8_column_table_takes_the_simulated_verilog_row():
    record = parse("vivado_2019_2_matrixmul_cosim.rpt")
    assert (record["kind"], record["tool"], record["top"]) == ("cosim", "vivado_hls", "matrixmul")
    assert record["cosim_latency"] == {"min": 39, "avg": 39, "max": 39}
    assert record["cosim_interval"] == {"min": None, "avg": None, "max": None}
    assert record["cosim_total_cycles"] is None and record["cosim_status"] == "Verilog: Pass"


def test_cosim_9_column_table_adds_total_execution_time():
    record = parse("vitis_2022_2_matmul_cosim.rpt")
    assert record["tool"] == "vitis_hls"
    assert record["cosim_latency"] == {"min": 40, "avg": 41, "max": 42}
    assert record["cosim_interval"] == {"min": 44, "avg": 44, "max": 44}
    assert record["cosim_total_cycles"] == 133


def test_lat_rpt_key_value_lines():
    record = parse("lat.rpt")
    assert record["kind"] == "cosim"
    assert record["cosim_latency"] == {"min": 39, "avg": 39, "max": 39}
    assert record["cosim_interval"]["max"] is None


# --- Vivado ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "used", "available"), [
    ("zynq7020_utilization_placed.rpt",
     {"LUT": 3912, "FF": 5127, "BRAM_18K": 5, "DSP": 3, "URAM": None, "BRAM_36K": 2.5},
     {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "DSP": 220, "URAM": None}),
    ("zcu102_2020_utilization_placed.rpt",
     {"LUT": 21034, "FF": 30112, "BRAM_18K": 96, "DSP": 260, "URAM": 0, "BRAM_36K": 48},
     {"LUT": 274080, "FF": 548160, "BRAM_18K": 1824, "DSP": 2520, "URAM": 0}),
    ("zcu104_2022_utilization_placed.rpt",
     {"LUT": 18220, "FF": 25531, "BRAM_18K": 61, "DSP": 384, "URAM": 12, "BRAM_36K": 30.5},
     {"LUT": 230400, "FF": 460800, "BRAM_18K": 624, "DSP": 1728, "URAM": 96}),
], ids=["7-series", "ultrascale+", "ultrascale+-prohibited"])
def test_utilization_by_site_type_and_column_name(name, used, available):
    record = parse(name)
    assert (record["kind"], record["tool"]) == ("utilization", "vivado")
    assert record["utilization"] == used
    assert record["available"] == available
    assert any("BRAM_18K = 2 x Block RAM Tile" in note for note in record["notes"])


def test_power_summary_components_and_hierarchy():
    record = parse("zynq7020_power_routed.rpt")
    assert (record["tool_version"], record["part"]) == ("2020.2", "xc7z020clg400-1")
    assert record["power_w"] == {"total": 1.455, "dynamic": 1.326, "static": 0.129}
    assert record["power_components"]["PS7"] == 1.261
    assert "LUT as Logic" not in record["power_components"]
    hierarchy = {row["name"]: row for row in record["power_hierarchy"]}
    assert hierarchy["matrixmul_0"] == {"name": "matrixmul_0", "level": 2, "power_w": 0.05}
    assert hierarchy["design_1_wrapper"]["level"] == 0
    assert hierarchy["rst_ps7_0_100M"]["power_w"] == 0.001  # "<0.001" reads as its bound


# --- malformed input -------------------------------------------------------------------------


def copy_with(tmp_path: Path, name: str, transform) -> Path:
    target = tmp_path / name
    target.write_text(transform((FIXTURES / name).read_text()))
    return target


def test_truncated_xml_names_the_file_and_position(tmp_path):
    path = copy_with(tmp_path, "vivado_2020_1_matrixmul_csynth.xml", lambda text: text[:900])
    with pytest.raises(HlsReportError, match=r"matrixmul_csynth\.xml: malformed XML: .*line \d+"):
        parse_report(path)
    assert issubclass(HlsReportError, HarnessError)


def _cut_inside_loop_table(text: str) -> str:
    return text[: text.index("| + Loop 1.1") + 20]


@pytest.mark.parametrize(
    ("fixture", "damage", "message"),
    [
        ("vivado_2020_1_matrixmul_csynth.xml",
         lambda text: text.replace("<LUT>427</LUT>", "<LUT>lots</LUT>"),
         r"csynth\.xml: element <AreaEstimates/Resources/LUT>"),
        ("vitis_2022_2_matmul_csynth.xml",
         lambda text: text.replace("<Part>xczu9eg-ffvb1156-2-e</Part>", ""),
         r"missing element <UserAssignments/Part>"),
        ("vivado_2018_2_scale_rows_csynth.rpt", _cut_inside_loop_table,
         r"csynth\.rpt: line \d+: table starting at line \d+"),
        ("zynq7020_utilization_placed.rpt",
         lambda text: text.replace("| DSPs           |    3 |", "| DSPs           |    3"),
         r"line \d+: row has 4 cells, header has 5"),
        ("vivado_2019_2_matrixmul_cosim.rpt",
         lambda text: text.replace("|   39|   39|   39|", "|   39|  abc|   39|"),
         r"cosim\.rpt: line 24: expected a number, got 'abc'"),
        ("vitis_2022_2_matmul_csynth.rpt",
         lambda text: text.replace("== Vitis HLS Report for 'matmul'", ""),
         r"line 1: no .*HLS Report for"),
    ],
    ids=["non-numeric-xml", "missing-xml-element", "truncated-table", "missing-cell",
         "bad-text-value", "no-header"],
)
def test_a_damaged_report_names_the_file_and_the_element_or_line(tmp_path, fixture, damage, message):
    with pytest.raises(HlsReportError, match=message):
        parse_report(copy_with(tmp_path, fixture, damage))


def test_unknown_file_is_refused(tmp_path):
    path = tmp_path / "notes.rpt"
    path.write_text("nothing to see\n")
    assert detect_kind(path) is None
    with pytest.raises(HlsReportError, match=r"notes\.rpt: not a known HLS or Vivado report"):
        parse_report(path)


# --- discovery and hls_show ------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Vitis project and a Vivado run, with a non-report, an unknown .rpt and a broken report."""
    layout = {
        "hls/solution1/syn/report/matmul_csynth.xml": "vitis_2022_2_matmul_csynth.xml",
        "hls/solution1/syn/report/csynth.xml": "vitis_2023_2_aggregate_csynth.xml",
        "hls/solution1/syn/report/matmul_csynth.rpt": "vitis_2022_2_matmul_csynth.rpt",
        "hls/solution1/sim/report/matmul_cosim.rpt": "vitis_2022_2_matmul_cosim.rpt",
        "hls/solution1/sim/report/verilog/lat.rpt": "lat.rpt",
        "vivado/top.runs/impl_1/top_utilization_placed.rpt": "zcu102_2020_utilization_placed.rpt",
        "vivado/top.runs/impl_1/top_power_routed.rpt": "zynq7020_power_routed.rpt",
    }
    for target, fixture in layout.items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, tmp_path / target)
    impl = tmp_path / "vivado/top.runs/impl_1"
    (impl / "top_timing_summary_routed.rpt").write_text("Timing summary, not parsed\n")
    (impl / "top.dcp").write_bytes(b"\x00binary")
    (tmp_path / "hls/solution1/syn/report/broken_csynth.xml").write_text("<profile><User")
    return tmp_path


def test_find_reports_uses_reports_and_skips_others_with_reasons(project):
    used, skipped = find_reports(project)
    kinds = sorted(record.kind for record in used)
    assert kinds == ["cosim", "cosim", "csynth", "csynth", "csynth", "power", "utilization"]
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"top_timing_summary_routed.rpt", "broken_csynth.xml"}
    assert reasons["top_timing_summary_routed.rpt"].startswith("not a known")
    assert reasons["broken_csynth.xml"].startswith("malformed: ") and "broken_csynth.xml" in reasons[
        "broken_csynth.xml"]


def test_detect_kind_by_name_and_by_content(tmp_path):
    assert detect_kind(FIXTURES / "lat.rpt") == "cosim"
    renamed = tmp_path / "report.txt"
    shutil.copy(FIXTURES / "zynq7020_power_routed.rpt", renamed)
    assert detect_kind(renamed) == "power"


def test_hls_show_json_for_a_file_has_the_schema_keys():
    shown = json.loads(hls_show(FIXTURES / "vitis_2022_2_matmul_csynth.xml", as_json=True))
    assert COMMON_KEYS <= set(shown)
    assert shown["schema_version"] == SCHEMA_VERSION
    assert set(shown["latency_cycles"]) == {"best", "avg", "worst"}
    assert set(shown["interval"]) == {"min", "max"}
    assert set(shown["resources"]) == set(shown["available"]) == RESOURCE_KEYS
    assert set(shown["cosim_latency"]) == {"min", "avg", "max"}
    assert set(shown["power_w"]) == {"total", "dynamic", "static"}
    assert set(shown["loops"][0]) >= {"name", "trip_count", "ii", "depth", "latency"}


def test_hls_show_json_for_a_directory_lists_used_and_skipped(project):
    shown = json.loads(hls_show(project, as_json=True))
    assert set(shown) == {"used", "skipped"}
    assert len(shown["used"]) == 7 and all(COMMON_KEYS <= set(item) for item in shown["used"])
    assert all(set(item) == {"path", "reason"} for item in shown["skipped"])


def test_hls_show_text_summarises_and_marks_unknowns(project):
    text = hls_show(FIXTURES / "vivado_2018_3_artix_csynth.xml", as_json=False)
    assert "best 12, avg ?, worst 3846" in text and "URAM ?/?" in text
    assert "loop Loop1.1: trip 2" in text
    listing = hls_show(project, as_json=False)
    assert "7 report(s) used, 2 skipped" in listing
    assert "skipped " in listing and "top_timing_summary_routed.rpt" in listing


def test_hls_show_refuses_a_malformed_file(project):
    with pytest.raises(HlsReportError, match="broken_csynth.xml"):
        hls_show(project / "hls/solution1/syn/report/broken_csynth.xml", as_json=True)


def test_hls_show_command_prints_records_and_exits_2_on_a_malformed_file(tmp_path, capsys):
    from harness.cli import main

    assert main(["hls", "show", str(FIXTURES / "vitis_2022_2_matmul_csynth.xml"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "csynth" and record["top"] == "matmul"
    broken = tmp_path / "top_csynth.xml"
    broken.write_text("<profile><ReportVersion>")
    assert main(["hls", "show", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0] and "malformed XML" in err[0]
