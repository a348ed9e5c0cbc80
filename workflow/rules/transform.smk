# Masks, transform to (H, K, L), sums of frame chunks, merge of entries, symmetrisation and
# the temperature series.  Transform jobs cover frame ranges of a scan (hklflow.jobs), so a
# cluster spreads one scan over many nodes; the ranges come from the config and the scans
# table only.
from hklflow.jobs import transform_frame_ranges

TRANSFORM_KINDS = list(EXP.reduction["transform"]["kinds"])
SYMMETRIZE = bool(EXP.reduction["merge"]["symmetrize"])


wildcard_constraints:
    kind="transform|masked_transform",
    frames=r"[0-9]+-[0-9]+",


def calibration_ponis_of_sample(wildcards):
    return sorted({f"results/calibration/{s.calibration}/geometry.poni"
                   for s in EXP.scans_of(wildcards.sample)})


def transform_parts(wildcards):
    scan = scan_of(wildcards)
    return [f"results/{wildcards.sample}/{wildcards.temperature}/{wildcards.entry}/"
            f"{wildcards.kind}_parts/{a:05d}-{b:05d}.nxs" for a, b in transform_frame_ranges(EXP, scan)]


def entry_volumes(wildcards):
    return [scan_path(s, f"{wildcards.kind}.nxs")
            for s in EXP.scans_of(wildcards.sample, wildcards.temperature)]


def merged_volumes_of_sample(wildcards):
    return [f"results/{wildcards.sample}/{t}/{wildcards.kind}.nxs"
            for t in EXP.temperatures_of(wildcards.sample)]


rule define_grid:
    """The (H, K, L) grid of a sample (shared by every temperature and entry, so volumes add
    and compare): from the config, or derived from the cell and the detector's Q range."""
    input:
        calibration_ponis_of_sample,
    output:
        "results/{sample}/grid.json",
    log:
        "logs/define_grid/{sample}.log",
    benchmark:
        "benchmarks/define_grid/{sample}.tsv"
    threads: rule_threads("define_grid")
    resources:
        mem_mb=rule_mem_mb("define_grid"),
        runtime=rule_runtime("define_grid"),
    shell:
        "{HKLFLOW} define_grid {CONFIG_ARGS} --sample {wildcards.sample} --poni {input}"
        " --out {output} > {log} 2>&1"


rule mask_scan:
    """Pixel mask (gaps, hot and dead pixels, user mask) and the 3D Bragg mask (regions
    around found and predicted peaks, as a table) of a scan entry, with a picture."""
    input:
        scan="results/{sample}/{temperature}/{entry}/scan.nxs",
        peaks="results/{sample}/{temperature}/{entry}/peaks.nxs",
        orientation="results/{sample}/{temperature}/orientation.nxs",
    output:
        mask="results/{sample}/{temperature}/{entry}/mask.nxs",
        png=report("results/{sample}/{temperature}/{entry}/mask.png", category="Masks",
                   subcategory="{sample} {temperature}", caption="../report/mask.rst"),
    log:
        "logs/mask_scan/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/mask_scan/{sample}/{temperature}/{entry}.tsv"
    threads: rule_threads("mask_scan")
    resources:
        mem_mb=rule_mem_mb("mask_scan"),
        runtime=rule_runtime("mask_scan"),
    shell:
        "{HKLFLOW} mask_scan {CONFIG_ARGS} --scan-file {input.scan} --peaks-file {input.peaks}"
        " --orientation {input.orientation} --out {output.mask} --png {output.png} > {log} 2>&1"


rule transform_chunk:
    """Map every unmasked pixel of frames [first, stop) of a scan entry to (H, K, L) and
    accumulate corrected intensity and weight on the sample's grid."""
    input:
        scan="results/{sample}/{temperature}/{entry}/scan.nxs",
        orientation="results/{sample}/{temperature}/orientation.nxs",
        grid="results/{sample}/grid.json",
        mask="results/{sample}/{temperature}/{entry}/mask.nxs",
    output:
        temp("results/{sample}/{temperature}/{entry}/{kind}_parts/{frames}.nxs"),
    log:
        "logs/transform_chunk/{sample}/{temperature}/{entry}/{kind}_{frames}.log",
    benchmark:
        "benchmarks/transform_chunk/{sample}/{temperature}/{entry}/{kind}_{frames}.tsv"
    threads: rule_threads("transform_chunk")
    resources:
        mem_mb=rule_mem_mb("transform_chunk"),
        runtime=rule_runtime("transform_chunk"),
    shell:
        "{HKLFLOW} transform {CONFIG_ARGS} --scan-file {input.scan}"
        " --orientation {input.orientation} --grid {input.grid} --mask {input.mask}"
        " --kind {wildcards.kind} --frames {wildcards.frames} --out {output} > {log} 2>&1"


rule sum_chunks:
    """The volume of one scan entry: the sum of its frame chunks, with slice pictures."""
    input:
        transform_parts,
    output:
        volume="results/{sample}/{temperature}/{entry}/{kind}.nxs",
        png=report("results/{sample}/{temperature}/{entry}/{kind}.png", category="Volumes",
                   subcategory="{sample} {temperature}", caption="../report/volume.rst"),
    log:
        "logs/sum_chunks/{sample}/{temperature}/{entry}/{kind}.log",
    benchmark:
        "benchmarks/sum_chunks/{sample}/{temperature}/{entry}/{kind}.tsv"
    threads: rule_threads("sum_chunks")
    resources:
        mem_mb=rule_mem_mb("sum_chunks"),
        runtime=rule_runtime("sum_chunks"),
    shell:
        "{HKLFLOW} sum_volumes {CONFIG_ARGS}"
        " --title {wildcards.sample}/{wildcards.temperature}/{wildcards.entry}"
        " --inputs {input} --out {output.volume} --png {output.png} > {log} 2>&1"


rule merge_entries:
    """The volume of a sample at one temperature: signal and weight of its entries summed,
    then divided, so the gaps of one entry are filled by the others."""
    input:
        entry_volumes,
    output:
        volume="results/{sample}/{temperature}/{kind}.nxs",
        png=report("results/{sample}/{temperature}/{kind}.png", category="Merged volumes",
                   subcategory="{sample}", caption="../report/volume.rst"),
    log:
        "logs/merge_entries/{sample}/{temperature}/{kind}.log",
    benchmark:
        "benchmarks/merge_entries/{sample}/{temperature}/{kind}.tsv"
    threads: rule_threads("merge_entries")
    resources:
        mem_mb=rule_mem_mb("merge_entries"),
        runtime=rule_runtime("merge_entries"),
    shell:
        "{HKLFLOW} sum_volumes {CONFIG_ARGS}"
        " --title {wildcards.sample}/{wildcards.temperature}"
        " --inputs {input} --out {output.volume} --png {output.png} > {log} 2>&1"


rule symmetrize:
    """The merged volume symmetrised by the Laue group: signal and weight summed over the
    equivalent positions of every voxel, then divided."""
    input:
        "results/{sample}/{temperature}/{kind}.nxs",
    output:
        volume="results/{sample}/{temperature}/{kind}_symmetrized.nxs",
        png=report("results/{sample}/{temperature}/{kind}_symmetrized.png",
                   category="Merged volumes", subcategory="{sample}",
                   caption="../report/volume.rst"),
    log:
        "logs/symmetrize/{sample}/{temperature}/{kind}.log",
    benchmark:
        "benchmarks/symmetrize/{sample}/{temperature}/{kind}.tsv"
    threads: rule_threads("symmetrize")
    resources:
        mem_mb=rule_mem_mb("symmetrize"),
        runtime=rule_runtime("symmetrize"),
    shell:
        "{HKLFLOW} symmetrize {CONFIG_ARGS} --sample {wildcards.sample} --input {input}"
        " --out {output.volume} --png {output.png} > {log} 2>&1"


rule temperature_series:
    """One slice of a sample's merged volume at every temperature, side by side."""
    input:
        merged_volumes_of_sample,
    output:
        report("results/{sample}/{kind}_temperature_series.png", category="Temperature series",
               caption="../report/temperature_series.rst"),
    log:
        "logs/temperature_series/{sample}/{kind}.log",
    benchmark:
        "benchmarks/temperature_series/{sample}/{kind}.tsv"
    threads: rule_threads("temperature_series")
    resources:
        mem_mb=rule_mem_mb("temperature_series"),
        runtime=rule_runtime("temperature_series"),
    shell:
        "{HKLFLOW} temperature_series {CONFIG_ARGS} --sample {wildcards.sample}"
        " --inputs {input} --png {output} > {log} 2>&1"


def transform_targets():
    targets = []
    for name in EXP.samples:
        for kind in TRANSFORM_KINDS:
            for t in EXP.temperatures_of(name):
                targets.append(f"results/{name}/{t}/{kind}.nxs")
                if SYMMETRIZE:
                    targets.append(f"results/{name}/{t}/{kind}_symmetrized.nxs")
            targets.append(f"results/{name}/{kind}_temperature_series.png")
    return targets
