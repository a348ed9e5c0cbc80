"""The scales file of a temperature (rule scale_entries): ``results/SAMPLE/TLABEL/
scales.json``, the fitted scale model of its entries (hklflow.algorithms.scaling.model), the
terms it holds and why, the statistics of equivalents before and after, and provenance::

  {"model": {"absorption_lmax", "detector_response", "detector_shape",
             "entries": {ENTRY: {"knots_deg", "scale", "absorption",
                                 "offset_knots_per_A", "offset"}}},
   "terms": {term: text}, "entries": {ENTRY: volume},
   "left_out": {ENTRY: why}, "statistics": {...},
   "verdict": {"matter": whether the scales change the equivalents beyond chance, "why"},
   "provenance": {...}}
"""
from __future__ import annotations

import json
from pathlib import Path

from ..model.scales import ScaleModel
from ..base.atomic import write_json_atomically
from ..base.errors import FileFormatError


def write_scales(path, model: ScaleModel, *, terms: dict, statistics: dict, verdict: dict,
                 entries: dict, left_out: dict, provenance: dict) -> Path:
    return write_json_atomically(path, {
        "model": model.as_dict(), "terms": terms,
        "entries": {k: str(v) for k, v in entries.items()}, "left_out": dict(left_out),
        "statistics": statistics, "verdict": dict(verdict), "provenance": provenance})


def read_scales(path) -> tuple[ScaleModel, dict]:
    """(the model, the whole file's content)."""
    try:
        content = json.loads(Path(path).read_text())
        return ScaleModel.from_dict(content["model"]), content
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a scales file of scale_entries ({exc})") from None
