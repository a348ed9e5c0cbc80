"""hklflow: Snakemake-orchestrated reduction of single-crystal X-ray diffuse scattering."""
__version__ = "0.1.0"
