"""The CPU numba compiles hklflow's kernels for: where a kernel's fastest form depends on
the instruction set (measured: docs/internals.md, the peak search's and the transform's
kernels), it asks here.  NUMBA_CPU_NAME / NUMBA_CPU_FEATURES change the target (and so the choice)."""
from __future__ import annotations


def target_features(context=None) -> set[str]:
    """The CPU features numba compiles for (the host's, or NUMBA_CPU_FEATURES)."""
    if context is None:
        # (here: numba only when asked)
        from numba.core.registry import cpu_target
        context = cpu_target.target_context
    features = getattr(context.codegen(), "_tm_features", "") or ""
    return {f[1:] for f in features.split(",") if f.startswith("+")}


def has_avx512(context=None) -> bool:
    """AVX-512 with the 64-bit integer and byte forms (every AVX-512 CPU has them)."""
    return {"avx512f", "avx512dq", "avx512bw"} <= target_features(context)
