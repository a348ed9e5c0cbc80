"""The masks of a scan entry: the pixel mask (gaps, dead and hot pixels, the user mask) and
the 3D Bragg mask (ellipsoids in row, column and frame), painted frame by frame by a
compiled kernel for the transform."""
