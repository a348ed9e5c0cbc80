"""The peak search: the streamed pass over a scan, its kernels and the gain seen in the frames."""
