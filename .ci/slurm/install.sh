#!/usr/bin/env bash
# Install what the CI SLURM stage needs: Debian's slurm-wlm (slurmctld, slurmd, client
# commands) and munge with apt, and the Snakemake SLURM executor plugin into .venv
# (pip install -e '.[slurm]').  Idempotent; every network step bounded by a timeout.
# Exit 0: installed; 2: cannot install here (not root and no password-less sudo, or no
# apt-get), so the caller may skip the stage; anything else: a real failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
    echo "== SLURM found: $(slurmctld -V), $(command -v munged)"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: not root: cannot install slurm-wlm/munge here" >&2
        exit 2
    fi
    command -v apt-get >/dev/null || { echo "install.sh: no apt-get here" >&2; exit 2; }
    echo "== $(date -u +%FT%TZ) installing Debian's slurm-wlm and munge"
    # the packages' own start scripts are not wanted (no systemd; start.sh runs the daemons)
    timeout 300 apt-get update -qq
    env DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    echo "== SLURM installed: $(slurmctld -V)"
fi

if ! .venv/bin/python -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    echo "== $(date -u +%FT%TZ) installing the Snakemake SLURM executor plugin (.[slurm])"
    timeout 600 .venv/bin/pip install -q -e '.[slurm]'
fi
.venv/bin/python - <<'EOF'
from importlib.metadata import version
print("== snakemake", version("snakemake"), "| snakemake-executor-plugin-slurm",
      version("snakemake-executor-plugin-slurm"))
EOF
