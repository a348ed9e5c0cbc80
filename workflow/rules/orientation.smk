def entries_files(wildcards, name, temperature=None):
    t = temperature or wildcards.temperature
    return [scan_path(s, name) for s in EXP.scans_of(wildcards.sample, t)]


def parent_orientation(wildcards):
    parent = EXP.samples[wildcards.sample].parent_for(
        EXP.scans_of(wildcards.sample, wildcards.temperature)[0].temperature)
    return f"results/{wildcards.sample}/{parent}/parent_orientation.nxs"


rule index_parent:
    """Index the parent scan of a sample from scratch (all its entries) and refine it: the
    orientation every child scan of the sample starts from."""
    input:
        scans=lambda w: entries_files(w, "scan.nxs"),
        peaks=lambda w: entries_files(w, "peaks.nxs"),
    output:
        orientation="results/{sample}/{temperature}/parent_orientation.nxs",
        png=report("results/{sample}/{temperature}/parent_orientation.png", category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    log:
        "logs/index_parent/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/index_parent/{sample}/{temperature}.tsv"
    threads: rule_threads("index_parent")
    resources:
        mem_mb=rule_mem_mb("index_parent"),
        runtime=rule_runtime("index_parent"),
    shell:
        "{HKLFLOW} index_parent {CONFIG_ARGS} --sample {wildcards.sample}"
        " --temperature {wildcards.temperature} --scan-files {input.scans}"
        " --peaks-files {input.peaks} --out {output.orientation} --png {output.png} > {log} 2>&1"


rule refine_scan:
    """Refine cell, orientation, detector and offsets of a sample at one temperature, starting
    from its parent's orientation (read-only)."""
    input:
        parent=parent_orientation,
        scans=lambda w: entries_files(w, "scan.nxs"),
        peaks=lambda w: entries_files(w, "peaks.nxs"),
    output:
        orientation="results/{sample}/{temperature}/orientation.nxs",
        png=report("results/{sample}/{temperature}/orientation.png", category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    log:
        "logs/refine_scan/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/refine_scan/{sample}/{temperature}.tsv"
    threads: rule_threads("refine_scan")
    resources:
        mem_mb=rule_mem_mb("refine_scan"),
        runtime=rule_runtime("refine_scan"),
    shell:
        "{HKLFLOW} refine_scan {CONFIG_ARGS} --sample {wildcards.sample}"
        " --temperature {wildcards.temperature} --parent {input.parent}"
        " --scan-files {input.scans} --peaks-files {input.peaks}"
        " --out {output.orientation} --png {output.png} > {log} 2>&1"
