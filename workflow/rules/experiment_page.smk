# The whole experiment on one page, results/report.html (hklflow experiment_page,
# docs/outputs.md "The experiment's page").  Its inputs are every other target, so that it
# is stale whenever any job runs again: the files it reads, and the jobs whose logs' warnings
# it lists (a log is no declared output, but it is rewritten only when its job runs, and
# that job's outputs lead to a target).


rule experiment_page:
    """Every calibration, scan, orientation, volume, PDF and warning on one page."""
    localrule: True
    input:
        unpack(page_files),
        targets=page_targets,
    output:
        html=outputs.EXPERIMENT_PAGE,
    log:
        "logs/experiment_page/report.log",
    benchmark:
        "benchmarks/experiment_page/report.tsv"
    threads: RESOURCES["experiment_page"].threads
    resources:
        mem_mb=RESOURCES["experiment_page"].mem_mb,
        runtime=RESOURCES["experiment_page"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow experiment_page --calibrations {input.calibrations:q} --peaks {input.peaks:q}"
        " --orientations {input.orientations:q} --tables {input.tables:q}"
        " --volumes {input.volumes:q} --pdfs {input.pdfs:q} --logs logs"
        " --out {output.html:q} > {log:q} 2>&1"
