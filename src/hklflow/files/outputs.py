"""Where every output of the workflow lies: one name per output, a path relative to the
experiment directory with Snakemake's wildcards (``{sample}``, ``{temperature}`` = the
temperature's label ``300K``, ``{entry}``, ``{calibration}``, ``{kind}``, ...).  The rules
(workflow/rules/*.smk) take their outputs from here, and so do the functions of common.smk
that name the inputs and targets (with fill); the file modules describe each file's layout
(files.scan for SCAN, ...).  The files of the modelling programs are named by their own
modules (files.model_inputs), in MODEL_INPUTS.

Light on purpose (nothing but the standard library): the Snakefile imports it when it
plans, and every cluster job plans again.
"""
from __future__ import annotations

import re

RESULTS = "results"

# calibrate_powder (files.calibration): the accepted geometry, its record, picture and version
CALIBRATION = f"{RESULTS}/calibration/{{calibration}}"
CALIBRATION_FILES = {"poni": "geometry.poni", "nexus": "calibration.nxs",
                     "png": "calibration.png", "version": "version.json"}
GEOMETRY_PONI = f"{CALIBRATION}/{CALIBRATION_FILES['poni']}"
CALIBRATION_NEXUS = f"{CALIBRATION}/{CALIBRATION_FILES['nexus']}"
CALIBRATION_PNG = f"{CALIBRATION}/{CALIBRATION_FILES['png']}"
CALIBRATION_VERSION = f"{CALIBRATION}/{CALIBRATION_FILES['version']}"

SAMPLE = f"{RESULTS}/{{sample}}"
TEMPERATURE = f"{SAMPLE}/{{temperature}}"
ENTRY = f"{TEMPERATURE}/{{entry}}"

# one scan entry: ingest_scan (files.scan), find_peaks (files.peaks), mask_scan (files.mask)
SCAN = f"{ENTRY}/scan.nxs"
PEAKS = f"{ENTRY}/peaks.nxs"
PEAKS_PNG = f"{ENTRY}/peaks.png"
MASK = f"{ENTRY}/mask.nxs"
MASK_PNG = f"{ENTRY}/mask.png"

# a sample at one temperature: index_parent, refine_temperature (files.orientation)
PARENT_ORIENTATION = f"{TEMPERATURE}/parent_orientation.nxs"
PARENT_ORIENTATION_PNG = f"{TEMPERATURE}/parent_orientation.png"
ORIENTATION = f"{TEMPERATURE}/orientation.nxs"
ORIENTATION_PNG = f"{TEMPERATURE}/orientation.png"
# refine_detector (reduction.refinement.detector_from all): the detector a sample's
# temperatures share, refined on all of them; orientation_table: every temperature's
# orientation beside the shared detector (files.orientation)
SHARED_DETECTOR = f"{SAMPLE}/shared_detector.nxs"
SHARED_DETECTOR_PNG = f"{SAMPLE}/shared_detector.png"
ORIENTATION_TABLE = f"{SAMPLE}/orientation_table.tsv"
ORIENTATION_TABLE_PNG = f"{SAMPLE}/orientation_table.png"

# define_grid (files.grid): one grid per sample
GRID = f"{SAMPLE}/grid.json"

# the volumes (files.volume): transform_frames's temporary parts ({frames}: part_frames),
# sum_chunks's of an entry, merge_entries's of a temperature and its symmetrisation's
VOLUME_PART = f"{ENTRY}/{{kind}}_parts/{{frames}}.nxs"
# transform_background's (temporary) of the background an entry names (scans table)
BACKGROUND_PART = f"{ENTRY}/{{kind}}_parts/background.nxs"
ENTRY_VOLUME = f"{ENTRY}/{{kind}}.nxs"
ENTRY_VOLUME_PNG = f"{ENTRY}/{{kind}}.png"
# a scan in progress (hklflow watch) is searched, masked and transformed a block of frames at a
# time, each block once: its peaks, mask and volumes stay until the scan is complete
ENTRY_BLOCKS = f"{ENTRY}/blocks"
BLOCK = f"{ENTRY_BLOCKS}/{{frames}}"
BLOCK_PEAKS = f"{BLOCK}/peaks.nxs"
BLOCK_MASK = f"{BLOCK}/mask.nxs"
BLOCK_VOLUME = f"{BLOCK}/{{kind}}.nxs"
# scale_entries (files.scales): the scales of a temperature's entries, which merge_entries applies
SCALES = f"{TEMPERATURE}/scales.json"
SCALES_PNG = f"{TEMPERATURE}/scales.png"
MERGED_VOLUME = f"{TEMPERATURE}/{{kind}}.nxs"
MERGED_VOLUME_PNG = f"{TEMPERATURE}/{{kind}}.png"
STATISTICS_PNG = f"{TEMPERATURE}/{{kind}}_statistics.png"
SYMMETRIZED_VOLUME = f"{TEMPERATURE}/{{kind}}_symmetrized.nxs"
SYMMETRIZED_VOLUME_PNG = f"{TEMPERATURE}/{{kind}}_symmetrized.png"
VOLUME = f"{TEMPERATURE}/{{volume}}.nxs"  # merged or symmetrised, by name ({volume})
TEMPERATURE_SERIES_PNG = f"{SAMPLE}/{{kind}}_temperature_series.png"

# total_pdf, delta_pdf (files.pdf; {pdf}: pdf or transform_pdf), pdf_temperature_series
TOTAL_PDF = f"{TEMPERATURE}/total_pdf.nxs"
TOTAL_PDF_PNG = f"{TEMPERATURE}/total_pdf.png"
DELTA_PDF = f"{TEMPERATURE}/{{pdf}}.nxs"
DELTA_PDF_PNG = f"{TEMPERATURE}/{{pdf}}.png"
PDF_SERIES_PNG = f"{SAMPLE}/pdf_temperature_series.png"

# nxrefine_wrapper (files.nxrefine): NXReduce finds sample, label and scan from the
# wrapper's path, and its scan directory beside it (files.nxrefine.scan_directory)
NXREFINE_WRAPPER = f"{SAMPLE}/nxrefine/{{sample}}_{{temperature}}.nxs"
NXREFINE_SCAN_DIRECTORY = f"{SAMPLE}/nxrefine/{{temperature}}"

# model_inputs: the folder of the files each modelling program reads of a volume
# ({volume}), named by the program's module (files.model_inputs.file_names)
MODEL_INPUTS = f"{TEMPERATURE}/model_inputs"

# cut (files.cut; output.cuts): a line or plane of a volume at every temperature ({cut}: its
# name), and cut_temperature_series: a line's temperatures in one picture
CUT = f"{TEMPERATURE}/cuts/{{cut}}.nxs"
CUT_PNG = f"{TEMPERATURE}/cuts/{{cut}}.png"
CUT_SERIES_PNG = f"{SAMPLE}/cuts/{{cut}}_temperature_series.png"

# hklflow watch: where every scan stands (live.status), a page that refreshes itself
STATUS_HTML = f"{RESULTS}/status.html"

# experiment_page (files.experiment_page): the whole experiment on one page, made last
EXPERIMENT_PAGE = f"{RESULTS}/report.html"

_WILDCARD = re.compile(r"\{(\w+)\}")


def fill(pattern: str, **values) -> str:
    """`pattern` with the wildcards given replaced by their values (str()), the others kept:
    fill(SCAN, sample="tiny", temperature="300K", entry="f1")."""
    return _WILDCARD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values
                         else m.group(0), pattern)


def glob_of(pattern: str, **values) -> str:
    """`pattern` as a glob: the wildcards given filled in, every other one `*`."""
    return _WILDCARD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else "*",
                         pattern)


def wildcards(pattern: str) -> list[str]:
    """The wildcards of a pattern, in order."""
    return _WILDCARD.findall(pattern)


def part_frames(first: int, stop: int) -> str:
    """The {frames} of a transform part: frames [first, stop) as FIRST-STOP, five digits
    each (steps.transform_frames.parse_frames reads it)."""
    return f"{first:05d}-{stop:05d}"
