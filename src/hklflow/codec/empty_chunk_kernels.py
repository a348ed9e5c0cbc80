"""The compiled loop that finds the chunks of a slab holding something other than the fill
value (the chunk writer stores those alone).  A module of its own so that numba is loaded
only by the steps that write chunks."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def stored_chunks(slab, chunk, fill, corners):
    """The (k, h) corners (into `corners`) of the chunks of an L slab ([planes, k, h] as
    uint32 bits) that hold a value other than `fill` bit for bit; returns how many.  A
    chunk of fill values alone is not stored: HDF5 gives its fill value back for it."""
    nl, nk, nh = slab.shape
    _, ck, ch = chunk
    n = 0
    for k0 in range(0, nk, ck):
        for h0 in range(0, nh, ch):
            k1 = min(k0 + ck, nk)
            h1 = min(h0 + ch, nh)
            empty = True
            for i in range(nl):
                for j in range(k0, k1):
                    row = slab[i, j, h0:h1]
                    differ = np.uint32(0)
                    for m in range(row.shape[0]):  # from 0 and no early exit: vectorised
                        differ |= row[m] ^ fill
                    if differ != 0:
                        empty = False
                        break
                if not empty:
                    break
            if not empty:
                corners[n, 0] = k0
                corners[n, 1] = h0
                n += 1
    return n
