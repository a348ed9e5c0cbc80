"""What every floor may use: the error family, step logging and progress, the memory a job may use, the CPU numba compiles for."""
