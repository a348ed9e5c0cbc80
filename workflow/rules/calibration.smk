rule calibrate_powder:
    """Refine the detector geometry from a calibrant image (or import a PONI file); every
    accepted calibration is kept as a version with an index of the scans it is valid for."""
    input:
        calibration_input,
    output:
        poni="results/calibration/{calibration}/geometry.poni",
        nexus="results/calibration/{calibration}/calibration.nxs",
        png=report("results/calibration/{calibration}/calibration.png", category="Calibration",
                   caption="../report/calibration.rst"),
    log:
        "logs/calibrate_powder/{calibration}.log",
    benchmark:
        "benchmarks/calibrate_powder/{calibration}.tsv"
    threads: rule_threads("calibrate_powder")
    resources:
        mem_mb=rule_mem_mb("calibrate_powder"),
        runtime=rule_runtime("calibrate_powder"),
    shell:
        "{HKLFLOW} calibrate_powder {CONFIG_ARGS} --calibration {wildcards.calibration}"
        " --out-dir results/calibration/{wildcards.calibration} > {log} 2>&1"
