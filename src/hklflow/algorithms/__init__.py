"""The algorithms, grouped by concern; no argument parsing, and no file I/O but the streamed volume sums."""
