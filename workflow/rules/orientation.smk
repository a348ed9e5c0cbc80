rule index_parent:
    """Index the parent scan of a sample from scratch (all its entries) and refine it: the
    orientation every other temperature of the sample starts from."""
    input:
        scans=lambda w: entries_files(w, outputs.SCAN),
        peaks=lambda w: entries_files(w, outputs.PEAKS),
    output:
        orientation=outputs.PARENT_ORIENTATION,
        png=report(outputs.PARENT_ORIENTATION_PNG, category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.index_parent(w.sample)),
    log:
        "logs/index_parent/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/index_parent/{sample}/{temperature}.tsv"
    threads: RESOURCES["index_parent"].threads
    resources:
        mem_mb=RESOURCES["index_parent"].mem_mb,
        runtime=RESOURCES["index_parent"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow index_parent --settings-file {params.settings:q} --scans {input.scans:q}"
        " --peaks {input.peaks:q} --out {output.orientation:q} --png {output.png:q} > {log:q} 2>&1"


rule refine_temperature:
    """Refine cell, orientation, detector and offsets of a sample at one temperature, starting
    from its parent's orientation (read-only)."""
    input:
        parent=parent_orientation,
        scans=lambda w: entries_files(w, outputs.SCAN),
        peaks=lambda w: entries_files(w, outputs.PEAKS),
    output:
        orientation=outputs.ORIENTATION,
        png=report(outputs.ORIENTATION_PNG, category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    params:
        settings=settings_file(SETTINGS.refine_temperature()),
    log:
        "logs/refine_temperature/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/refine_temperature/{sample}/{temperature}.tsv"
    threads: RESOURCES["refine_temperature"].threads
    resources:
        mem_mb=RESOURCES["refine_temperature"].mem_mb,
        runtime=RESOURCES["refine_temperature"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow refine_temperature --settings-file {params.settings:q} --parent {input.parent:q}"
        " --scans {input.scans:q} --peaks {input.peaks:q} --out {output.orientation:q}"
        " --png {output.png:q} > {log:q} 2>&1"
