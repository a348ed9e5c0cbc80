"""hklflow.base.numba_target: the features numba compiles for are the host's (checked against
/proc/cpuinfo where Linux has one), which is what the kernels' choice of form follows."""
from __future__ import annotations

import os

import pytest

from hklflow.base.numba_target import has_avx512, target_features


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split()[2:])
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo")


def test_target_features_are_the_hosts():
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        pytest.skip("numba's target set by the environment")
    flags = cpu_flags()
    features = target_features()
    for name in ("avx2", "avx512f", "avx512bw", "avx512dq", "gfni", "fma"):
        assert (name in features) == (name in flags), name
    assert has_avx512() == {"avx512f", "avx512dq", "avx512bw"}.issubset(flags)
