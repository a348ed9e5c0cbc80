"""The variance of a voxel's signal from the EXPECTED counts of its pixel-frames (issue 81,
reduction.transform.variance_from expected), formed once, where the frame chunks of a
scan entry are summed (rule sum_chunks).

A pixel-frame i adds value_i = v_i a_i to its voxel's signal (v_i its raw count, gain x
photons; a_i = corrections x frame scale).  Its own count as its variance (gain v_i a_i^2,
variance_from observed) is 0 where it counted nothing, so a voxel whose pixel-frames all
counted 0 gets sigma = 0 (an infinite weight in a 1/sigma^2 fit), and it makes 1/sigma^2
weights of weak voxels follow their own fluctuations (their weighted means come out low).
From the expected count instead: with the corrected intensity I locally constant, v_i is
expected to be I / a_i, of variance gain (I / a_i) a_i^2 = gain I a_i, so a voxel's
variance is I x gain x sum of a_i.  The transform's kernels sum U = gain x sum of a_i (the
third cell, in the memory the variance took; with rotation sub-steps each pixel-frame's
parts as one observation, as the observed variance's) and its parts carry it as
variance_per_intensity_sum; the sum of the parts turns it into the variance

    variance = u x I~,   I~ = (S + 0.5 U / W) / W   over the (up to) 26 voxels around it

u the voxel's own gain x sum of a, S, W, U the sums of signal, weight and gain x sum of a
over the measured voxels of its 3 x 3 x 3 neighbourhood, the voxel itself left out
(unmeasured voxels add nothing).  S / W is the neighbourhood's mean corrected intensity:
smooth, and with the voxel left out its weight 1/sigma^2 does not depend on its own counts
at all (with it in, 1/27 of them: weighted means ~0.4% low at 10 photons a voxel).  The
0.5 U / W^2 is the Jeffreys prior's half photon: the posterior mean of a Poisson rate after
N photons in an exposure E is (N + 0.5) / E, here with N ~ S W / U photons in E ~ W^2 / U
(U / W = gain x the mean a of a pixel-frame, the corrected intensity of one photon); it
keeps I~ > 0, so sigma > 0, where the neighbourhood counted nothing at all (an honest "half
a photon at most"), and shifts I~ by half a photon of the whole neighbourhood elsewhere
(1/500 at 0.5 counts per pixel-frame and 40 pixel-frames a voxel).  Where the intensity is
not locally constant (a Bragg peak, its edge: the neighbours' mean far below a peak's
centre, above its tails) the voxel's own signal tells: when it lies more than
OWN_BEYOND_SIGMA (4) sigma from w I~ (sigma^2 = u I~, what I~ predicts), or no neighbour
was measured, the voxel takes its own I~ = (s + 0.5 u / w) / w instead (s, w its own
sums: many counts at a peak, so its own fluctuation hardly biases its weight; a weak voxel
crosses 4 sigma by chance alone a few times in 10^5).
"""
from __future__ import annotations

import numpy as np

# (the loop itself in files.volume_kernels: the transform's writer forms a complete
# volume's variance too, files.volume_bricks, and the files floor imports no algorithm)
from ...files.volume_kernels import EXPECTED_VARIANCE_HOW as HOW
from ...files.volume_kernels import JEFFREYS_PHOTONS, OWN_BEYOND_SIGMA, variance_of_slab

__all__ = ["HOW", "JEFFREYS_PHOTONS", "OWN_BEYOND_SIGMA", "variance_from_expected",
           "variance_of_slab"]


def variance_from_expected(signal: np.ndarray, weight: np.ndarray,
                           per_intensity: np.ndarray) -> np.ndarray:
    """The variance [l, k, h] (float64) of a whole volume's signal from its summed signal,
    weight and variance per unit intensity (gain x sum of a: a transform's variance cells
    with variance_from expected)."""
    arrays = [np.asarray(a, np.float64) for a in (signal, weight, per_intensity)]
    return variance_of_slab(*arrays, first=0, n=arrays[0].shape[0])
