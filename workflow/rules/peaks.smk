rule find_peaks:
    """One streamed pass over every frame of a scan entry: per-frame statistics and the 3D
    Bragg peaks (dispersion test), with a picture."""
    input:
        scan="results/{sample}/{temperature}/{entry}/scan.nxs",
    output:
        peaks="results/{sample}/{temperature}/{entry}/peaks.nxs",
        png=report("results/{sample}/{temperature}/{entry}/peaks.png", category="Peak search",
                   subcategory="{sample} {temperature}", caption="../report/peaks.rst"),
    log:
        "logs/find_peaks/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/find_peaks/{sample}/{temperature}/{entry}.tsv"
    threads: rule_threads("find_peaks")
    resources:
        mem_mb=rule_mem_mb("find_peaks"),
        runtime=rule_runtime("find_peaks"),
    shell:
        "{HKLFLOW} find_peaks {CONFIG_ARGS} --scan-file {input.scan}"
        " --out {output.peaks} --png {output.png} > {log} 2>&1"
