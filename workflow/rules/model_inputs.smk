# The files modelling programs read of every merged and symmetrised volume
# (output.model_inputs), in results/SAMPLE/TLABEL/model_inputs/, each program's named by its
# module: hklflow.files.model_inputs.rmc_discord (VOLUME_rmc_discord.nxs), .yell
# (VOLUME_yell/).


rule model_inputs:
    """The files Yell and rmc-discord read of one volume: intensity, its uncertainty (their
    weights) and the grid, in each program's own layout."""
    input:
        volume=outputs.VOLUME,
    output:
        model_input_outputs(),
    params:
        settings=settings_file(SETTINGS.model_inputs()),
        out_dir=outputs.MODEL_INPUTS,
    log:
        "logs/model_inputs/{sample}/{temperature}/{volume}.log",
    benchmark:
        "benchmarks/model_inputs/{sample}/{temperature}/{volume}.tsv"
    threads: RESOURCES["model_inputs"].threads
    resources:
        mem_mb=RESOURCES["model_inputs"].mem_mb,
        runtime=RESOURCES["model_inputs"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow model_inputs --settings-file {params.settings:q} --volume {input.volume:q}"
        " --out-dir {params.out_dir:q} --stem {wildcards.volume:q} > {log:q} 2>&1"
