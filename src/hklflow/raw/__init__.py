"""Raw data, read-only: where a scan's files are and their fingerprints, frames streamed from HDF5/CBF/TIFF, single images, monitors."""
