"""One module per kind of file hklflow writes and reads, over one HDF5 helper (h5.py)."""
