# The files modelling programs read of every merged and symmetrised volume
# (output.model_inputs): results/SAMPLE/TLABEL/model_inputs/VOLUME_rmc_discord.nxs and
# VOLUME_yell/ (hklflow.files.model_inputs).


rule model_inputs:
    """The files Yell and rmc-discord read of one volume: intensity, its uncertainty (their
    weights) and the grid, in each program's own layout."""
    input:
        volume="results/{sample}/{temperature}/{volume}.nxs",
    output:
        model_input_outputs("results/{sample}/{temperature}/model_inputs/{volume}"),
    params:
        settings=settings_file(SETTINGS.model_inputs()),
        out_dir="results/{sample}/{temperature}/model_inputs",
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
