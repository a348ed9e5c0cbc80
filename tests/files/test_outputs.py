"""hklflow.files.outputs: one name per output of the workflow, which the rules take."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from hklflow.files import outputs
from hklflow.files.nxrefine import scan_directory

from conftest import REPO

PATTERNS = {name: value for name, value in vars(outputs).items()
            if name.isupper() and isinstance(value, str) and name != "RESULTS"}


def test_every_name_is_a_path_under_results_with_known_wildcards():
    known = {"calibration", "sample", "temperature", "entry", "kind", "frames", "volume", "pdf",
             "cut"}
    for name, pattern in PATTERNS.items():
        assert pattern.startswith("results/"), name
        assert set(outputs.wildcards(pattern)) <= known, name
    assert len(set(PATTERNS.values())) == len(PATTERNS)  # no two outputs share a name


def test_fill_names_an_output_and_keeps_the_wildcards_not_given():
    assert outputs.fill(outputs.SCAN, sample="tiny", temperature="300K", entry="f1") == \
        "results/tiny/300K/f1/scan.nxs"
    assert outputs.fill(outputs.VOLUME_PART, kind="transform") == \
        "results/{sample}/{temperature}/{entry}/transform_parts/{frames}.nxs"
    assert outputs.fill(outputs.GEOMETRY_PONI, calibration="ceo2") == \
        "results/calibration/ceo2/geometry.poni"
    assert outputs.wildcards(outputs.NXREFINE_WRAPPER) == ["sample", "sample", "temperature"]


def test_a_part_s_frames_are_what_the_transform_step_reads():
    from hklflow.steps.transform_frames import parse_frames

    assert outputs.part_frames(10, 250) == "00010-00250"
    assert parse_frames(outputs.part_frames(10, 250), 300) == (10, 250)


def test_nxrefine_scan_directory_is_where_nxreduce_looks_for_it():
    """NXReduce finds the scan directory from the wrapper's path (files.nxrefine); the rule
    declares it as NXREFINE_SCAN_DIRECTORY: the two agree."""
    at = dict(sample="lsco_x", temperature="300K")
    wrapper = outputs.fill(outputs.NXREFINE_WRAPPER, **at)
    assert str(scan_directory(wrapper, "lsco_x")) == outputs.fill(
        outputs.NXREFINE_SCAN_DIRECTORY, **at)


def test_the_rules_name_no_output_of_their_own():
    """The rules and common.smk take every results/ path from here: no literal is left
    in their code (comments may still say where the files lie)."""
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        code = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
        assert not [line for line in code if "results/" in line], path.name
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert "from hklflow.files import model_inputs, outputs" in common


@pytest.mark.parametrize("rule, names", [
    ("calibrate_powder", ["GEOMETRY_PONI", "CALIBRATION_NEXUS", "CALIBRATION_PNG",
                          "CALIBRATION_VERSION"]),
    ("ingest_scan", ["SCAN"]), ("find_peaks", ["PEAKS", "PEAKS_PNG"]),
    ("index_parent", ["PARENT_ORIENTATION", "PARENT_ORIENTATION_PNG"]),
    ("refine_temperature", ["ORIENTATION", "ORIENTATION_PNG"]), ("define_grid", ["GRID"]),
    ("mask_scan", ["MASK", "MASK_PNG"]), ("transform_frames", ["VOLUME_PART"]),
    ("sum_chunks", ["ENTRY_VOLUME", "ENTRY_VOLUME_PNG"]),
    ("scale_entries", ["SCALES", "SCALES_PNG"]),
    ("merge_entries", ["MERGED_VOLUME", "MERGED_VOLUME_PNG", "STATISTICS_PNG"]),
    ("symmetrize", ["SYMMETRIZED_VOLUME", "SYMMETRIZED_VOLUME_PNG"]),
    ("temperature_series", ["TEMPERATURE_SERIES_PNG"]),
    ("total_pdf", ["TOTAL_PDF", "TOTAL_PDF_PNG"]), ("delta_pdf", ["DELTA_PDF", "DELTA_PDF_PNG"]),
    ("pdf_temperature_series", ["PDF_SERIES_PNG"]),
    ("nxrefine_wrapper", ["NXREFINE_WRAPPER", "NXREFINE_SCAN_DIRECTORY"]),
    ("cut", ["CUT", "CUT_PNG"]), ("cut_temperature_series", ["CUT_SERIES_PNG"]),
    ("experiment_page", ["EXPERIMENT_PAGE"])])
def test_each_rule_takes_its_outputs_from_here(rule, names):
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    body = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, re.M | re.S).group(1)
    block = re.search(r"^    output:\n(.*?)^    \w+:", body, re.M | re.S).group(1)
    assert re.findall(r"outputs\.([A-Z_]+)", block) == names


def test_naming_an_output_imports_nothing_but_the_standard_library():
    code = ("import sys\nimport hklflow.files.outputs\n"
            "assert not {'numpy', 'h5py'} & set(sys.modules), sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
