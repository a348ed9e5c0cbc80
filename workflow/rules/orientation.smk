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
        settings=lambda w: settings_file(SETTINGS.index_parent(w.sample, w.temperature)),
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


rule refine_detector:
    """Refine one detector on the peaks of every temperature of a sample together
    (reduction.refinement.detector_from all), each temperature from its parent's orientation:
    it waits for every entry's peaks and every parent's indexing."""
    input:
        parents=sample_parent_orientations,
        scans=lambda w: sample_entries_files(w, outputs.SCAN),
        peaks=lambda w: sample_entries_files(w, outputs.PEAKS),
    output:
        detector=outputs.SHARED_DETECTOR,
        png=report(outputs.SHARED_DETECTOR_PNG, category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.refine_detector(w.sample)),
    log:
        "logs/refine_detector/{sample}.log",
    benchmark:
        "benchmarks/refine_detector/{sample}.tsv"
    threads: RESOURCES["refine_detector"].threads
    resources:
        mem_mb=RESOURCES["refine_detector"].mem_mb,
        runtime=RESOURCES["refine_detector"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow refine_detector --settings-file {params.settings:q} --parents {input.parents:q}"
        " --scans {input.scans:q} --peaks {input.peaks:q} --out {output.detector:q}"
        " --png {output.png:q} > {log:q} 2>&1"


rule refine_temperature:
    """Refine cell, orientation and offsets of a sample at one temperature, starting from
    its parent's orientation (read-only), with the shared detector held: the parent's, or
    refine_detector's (detector_from all)."""
    input:
        parent=parent_orientation,
        detector=shared_detector,
        scans=lambda w: entries_files(w, outputs.SCAN),
        peaks=lambda w: entries_files(w, outputs.PEAKS),
    output:
        orientation=outputs.ORIENTATION,
        png=report(outputs.ORIENTATION_PNG, category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.refine_temperature(w.sample, w.temperature)),
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
        # (the command of before unless detector_from is all: Snakemake reruns a job whose
        # command changed, and would reduce every experiment made before again)
        "hklflow refine_temperature --settings-file {params.settings:q} --parent {input.parent:q}"
        + (" --detector {input.detector:q}" if DETECTOR_FROM_ALL else "") +
        " --scans {input.scans:q} --peaks {input.peaks:q} --out {output.orientation:q}"
        " --png {output.png:q} > {log:q} 2>&1"


rule orientation_table:
    """Every temperature's cell, esd, correlation with the distance and residuals beside the
    detector they share: a table and a picture per sample."""
    input:
        sample_orientations,
    output:
        table=outputs.ORIENTATION_TABLE,
        png=report(outputs.ORIENTATION_TABLE_PNG, category="Orientation",
                   subcategory="{sample}", caption="../report/orientation.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.orientation_table(w.sample)),
    log:
        "logs/orientation_table/{sample}.log",
    benchmark:
        "benchmarks/orientation_table/{sample}.tsv"
    threads: RESOURCES["orientation_table"].threads
    resources:
        mem_mb=RESOURCES["orientation_table"].mem_mb,
        runtime=RESOURCES["orientation_table"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow orientation_table --settings-file {params.settings:q} --orientations {input:q}"
        " --out {output.table:q} --png {output.png:q} > {log:q} 2>&1"
