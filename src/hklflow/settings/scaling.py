"""The settings of the scaling between a temperature's entries (rule scale_entries;
reduction.scaling), apart from params.py, which holds every other step's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .params import Params, from_config_at


@dataclass(frozen=True)
class ScalingParams(Params):
    """What scale_entries uses of reduction.scaling, and the statistics' Bragg radius
    (enabled and apply are the workflow's and the merges': whether the step runs and
    whether the merges apply its scales; the fit is the same either way)."""

    SECTION: ClassVar[str] = "reduction.scaling"
    NAME: ClassVar[str] = "scaling"

    scale_interval: float
    scale_smoothness: float
    absorption: str | bool  # auto | true | false
    absorption_lmax: int
    absorption_regularisation: float
    detector_response: bool
    detector_bins: int
    detector_regularisation: float
    offset: bool
    offset_knots: int
    offset_regularisation: float
    outlier_z: float
    max_orbits: int
    min_observations_per_parameter: float
    bragg_radius: float = from_config_at("reduction.merge.statistics_bragg_radius")
