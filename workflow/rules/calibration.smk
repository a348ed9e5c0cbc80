rule calibrate_powder:
    """Refine the detector geometry from a calibrant image (or import a PONI file); every
    accepted calibration is archived as a version (version.json says which one this is)."""
    # one image, seconds: on a cluster the submitting Snakemake runs it at once (no wave of
    # queue wait before every peak search; a wrong calibration fails in front of the user)
    localrule: True
    input:
        calibration_sources,
    output:
        poni=outputs.GEOMETRY_PONI,
        nexus=outputs.CALIBRATION_NEXUS,
        png=report(outputs.CALIBRATION_PNG, category="Calibration",
                   caption="../report/calibration.rst"),
        version=outputs.CALIBRATION_VERSION,
    params:
        settings=lambda w: settings_file(SETTINGS.calibrate_powder(w.calibration)),
    log:
        "logs/calibrate_powder/{calibration}.log",
    benchmark:
        "benchmarks/calibrate_powder/{calibration}.tsv"
    threads: RESOURCES["calibrate_powder"].threads
    resources:
        mem_mb=RESOURCES["calibrate_powder"].mem_mb,
        runtime=RESOURCES["calibrate_powder"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow calibrate_powder --settings-file {params.settings:q} --poni {output.poni:q}"
        " --nexus {output.nexus:q} --png {output.png:q} --version {output.version:q}"
        " > {log:q} 2>&1"
