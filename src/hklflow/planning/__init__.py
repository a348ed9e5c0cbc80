"""Planning: the config and scans table read and checked once, the jobs and the settings each receives, and every hook into Snakemake (the one boundary)."""
