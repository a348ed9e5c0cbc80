rule ingest_scan:
    """Build the NeXus file of one scan entry: link (never copy) the raw frames, record
    angles, temperature, monitor and the geometry of the calibration valid for the scan."""
    input:
        raw=raw_data_input,
        poni=calibration_poni,
    output:
        "results/{sample}/{temperature}/{entry}/scan.nxs",
    log:
        "logs/ingest_scan/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/ingest_scan/{sample}/{temperature}/{entry}.tsv"
    threads: rule_threads("ingest_scan")
    resources:
        mem_mb=rule_mem_mb("ingest_scan"),
        runtime=rule_runtime("ingest_scan"),
    shell:
        "{HKLFLOW} ingest_scan {CONFIG_ARGS}"
        " --scan {wildcards.sample}/{wildcards.temperature}/{wildcards.entry}"
        " --poni {input.poni} --out {output} > {log} 2>&1"
