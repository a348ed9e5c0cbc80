# Cuts of a sample's volume at every temperature (output.cuts: hklflow.planning.cuts), in
# results/SAMPLE/TLABEL/cuts/NAME.nxs and .png, and a line's temperatures in one picture,
# results/SAMPLE/cuts/NAME_temperature_series.png (docs/cuts.md).
# (their input functions: common.smk)

rule cut:
    """A line or plane of one volume at one temperature (hklflow cut, as by hand)."""
    input:
        volume=cut_volume,
    output:
        nxs=outputs.CUT,
        png=outputs.CUT_PNG,
    params:
        # the cut's options: a changed spec changes them, and the job runs again
        args=lambda w: shlex.join(cut_arguments(cut_spec(EXP, w.sample, w.cut))),
        title=lambda w: f"{w.sample} {w.temperature}: cut {w.cut}",
    wildcard_constraints:
        cut="[A-Za-z0-9][A-Za-z0-9_.-]*",
    log:
        "logs/cut/{sample}/{temperature}/{cut}.log",
    benchmark:
        "benchmarks/cut/{sample}/{temperature}/{cut}.tsv"
    threads: RESOURCES["cut"].threads
    resources:
        mem_mb=RESOURCES["cut"].mem_mb,
        runtime=RESOURCES["cut"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow cut {input.volume:q} {params.args} --title {params.title:q}"
        " --out {output.nxs:q} --png {output.png:q} > {log:q} 2>&1"


rule cut_temperature_series:
    """A line cut at every temperature of its sample, in one picture."""
    localrule: True
    input:
        cuts=cut_series_inputs,
    output:
        png=outputs.CUT_SERIES_PNG,
    params:
        labels=lambda w: shlex.join(EXP.temperatures_of(w.sample)),
        title=lambda w: f"{w.sample}: cut {w.cut} at every temperature",
    wildcard_constraints:
        cut="[A-Za-z0-9][A-Za-z0-9_.-]*",
    log:
        "logs/cut_temperature_series/{sample}/{cut}.log",
    benchmark:
        "benchmarks/cut_temperature_series/{sample}/{cut}.tsv"
    threads: RESOURCES["cut_temperature_series"].threads
    resources:
        mem_mb=RESOURCES["cut_temperature_series"].mem_mb,
        runtime=RESOURCES["cut_temperature_series"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow cut_temperature_series --cuts {input.cuts:q} --labels {params.labels}"
        " --title {params.title:q} --png {output.png:q} > {log:q} 2>&1"
