"""One module per kind of file hklflow writes and reads, over one HDF5 helper (h5.py);
outputs.py names every output of the workflow (the rules take their outputs from it)."""
