"""Whether the uncertainties of a merged volume hold: I/sigma, chi^2/nu of symmetry
equivalents and CC1/2 in shells of |Q|."""

# what the figures say of a diffuse-scattering volume (its notes and its picture)
MEANING = {
    "chi2_nu": "chi^2/nu of symmetry-equivalent voxels near 1: the sigmas and the Laue symmetry "
               "hold; above 1, the equivalents differ by more than their sigmas (sigmas too "
               "small, absorption, a wrong group, Bragg nodes not masked); below 1, the sigmas "
               "are too large",
    "cc_half": "CC1/2 correlates two halves of the frames voxel by voxel within a shell: where "
               "the diffuse signal is flat within the shell it is low even at high I/sigma "
               "(nothing varies to correlate), so it is not comparable with CC1/2 of Bragg data",
    "i_over_sigma": "mean I/sigma of the measured voxels in the shell",
}
