# hklflow: reduction of single-crystal X-ray diffuse scattering, one experiment per run.
#   snakemake -n                        what would run (dry run)
#   snakemake --cores N                 run on this machine
#   snakemake --profile profiles/slurm  run on a SLURM cluster
# Run it in the experiment directory (or pass --directory): config/config.yaml and the scans
# table it names are read from there; outputs go to results/, logs to logs/.  Every job
# receives the settings it uses through its rule's params (docs/map.md), so a changed
# setting reruns exactly the jobs that use it, and what depends on them.  The settings travel
# as a file named by their digest (.snakemake/hklflow/settings/), so a command stays short.
from snakemake.utils import min_version

min_version("9.0")

from hklflow.planning import snakemake_compat
from hklflow.planning.config import ConfigError, check_yaml_syntax

try:  # Snakemake's own message for a YAML syntax error names neither the line nor the column
    check_yaml_syntax(["config/config.yaml"])
except ConfigError as exc:
    snakemake_compat.stop_plan(f"invalid configuration: {exc}")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/peaks.smk"
include: "workflow/rules/orientation.smk"
include: "workflow/rules/transform.smk"
include: "workflow/rules/blocks.smk"
include: "workflow/rules/pdf.smk"
include: "workflow/rules/nxrefine.smk"
include: "workflow/rules/model_inputs.smk"
include: "workflow/rules/cuts.smk"
include: "workflow/rules/experiment_page.smk"


# Snakemake asks for the parameters of these functions for every job it plans
snakemake_compat.record_rule_function_parameters(workflow.rules)


onstart:
    # results that would not fit stop the run here, before its first job (a dry run, which
    # never comes here, only says so: common.smk)
    refuse_results_that_do_not_fit()
    # Snakemake's SIGTERM handler on a thread of its own (it deadlocked when the signal came
    # while jobs were being scheduled: hklflow.planning.snakemake_compat)
    snakemake_compat.defer_sigterm_handler()


rule all:
    input:
        all_targets(),
    default_target: True
