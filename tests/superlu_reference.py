"""SuperLU, scipy's sparse LU: the tests' independent check of the conjugate gradients that
solve the fill's systems (hklflow.algorithms.pdf.fill)."""
from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import splu


def superlu_solve(S, rhs) -> np.ndarray | None:
    """x with S x = rhs, None if S is singular.  Every S of the fill is symmetric, so the
    minimum-degree ordering of S^T + S suits it (fewer factor entries than the default
    COLAMD)."""
    try:
        lu = splu(S.tocsc(), permc_spec="MMD_AT_PLUS_A")
    except RuntimeError:  # "Factor is exactly singular"
        return None
    return lu.solve(rhs)
