rule find_peaks:
    """One streamed pass over every frame of a scan entry: per-frame statistics and the 3D
    Bragg peaks (dispersion test), with a picture."""
    # on a cluster, in the job that reads the peaks (index_parent or refine_temperature)
    group: peaks_group
    input:
        scan=rules.ingest_scan.output.scan,
        user_mask=user_mask,
        # a scan in progress: its blocks' peaks put together, not searched again (blocks.smk)
        blocks=block_peaks,
    output:
        peaks=outputs.PEAKS,
        png=report(outputs.PEAKS_PNG, category="Peak search",
                   subcategory="{sample} {temperature}", caption="../report/peaks.rst"),
    params:
        settings=settings_file(SETTINGS.find_peaks()),
        blocks=lambda w, input: option("--blocks", input.blocks),
    log:
        "logs/find_peaks/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/find_peaks/{sample}/{temperature}/{entry}.tsv"
    threads: RESOURCES["find_peaks"].threads
    resources:
        mem_mb=RESOURCES["find_peaks"].mem_mb,
        runtime=RESOURCES["find_peaks"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow find_peaks --settings-file {params.settings:q} --threads {threads}"
        " --scan {input.scan:q}{params.blocks}"
        " --out {output.peaks:q} --png {output.png:q} > {log:q} 2>&1"
