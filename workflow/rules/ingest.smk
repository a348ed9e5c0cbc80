rule ingest_scan:
    """Build the NeXus file of one scan entry: link (never copy) the raw frames, fingerprint
    them, record angles, temperature, monitor and the calibration valid for the scan."""
    # on a cluster, in the job that reads the peaks (index_parent or refine_temperature)
    group: peaks_group
    input:
        raw=raw_files,
        raw_change=raw_change,
        monitor=monitor_column_file,
        poni=lambda w: scan_calibration(w, outputs.GEOMETRY_PONI),
        version=lambda w: scan_calibration(w, outputs.CALIBRATION_VERSION),
    output:
        scan=outputs.SCAN,
    params:
        settings=lambda w: settings_file(SETTINGS.ingest_scan(w.sample, w.temperature, w.entry)),
    log:
        "logs/ingest_scan/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/ingest_scan/{sample}/{temperature}/{entry}.tsv"
    threads: RESOURCES["ingest_scan"].threads
    resources:
        mem_mb=RESOURCES["ingest_scan"].mem_mb,
        runtime=RESOURCES["ingest_scan"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow ingest_scan --settings-file {params.settings:q} --poni {input.poni:q}"
        " --version {input.version:q} --out {output.scan:q} > {log:q} 2>&1"
