#!/usr/bin/env bash
# Snakemake runs this in a freshly made conda environment of envs/hklflow.yaml
# (--software-deployment-method conda): it installs hklflow itself there, from the source
# checkout the workflow came with (the Snakefile exports its path as HKLFLOW_DIST; from an
# installed wheel HKLFLOW_DIST is "hklflow==VERSION", to be found on your package index).
set -euo pipefail
python -m pip install --no-deps "${HKLFLOW_DIST:?the Snakefile sets HKLFLOW_DIST}"
