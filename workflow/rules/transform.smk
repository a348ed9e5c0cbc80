# The sample's grid, masks, transform to (H, K, L) in frame-range jobs (hklflow.planning.jobs: a
# cluster spreads one scan over many nodes), sums of the frame chunks, merge of the entries,
# symmetrisation and the temperature series.


rule define_grid:
    """The (H, K, L) grid of a sample (shared by every temperature and entry, so volumes add
    and compare): from the config, or derived from the cell and the detector's Q range."""
    # a fraction of a second, right after the calibration: run by the submitting Snakemake
    localrule: True
    input:
        sample_ponis,
    output:
        grid=outputs.GRID,
    params:
        settings=lambda w: settings_file(SETTINGS.define_grid(w.sample, calibration_poni)),
    log:
        "logs/define_grid/{sample}.log",
    benchmark:
        "benchmarks/define_grid/{sample}.tsv"
    threads: RESOURCES["define_grid"].threads
    resources:
        mem_mb=RESOURCES["define_grid"].mem_mb,
        runtime=RESOURCES["define_grid"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow define_grid --settings-file {params.settings:q} --out {output.grid:q}"
        " > {log:q} 2>&1"


rule mask_scan:
    """Pixel mask (gaps, hot and dead pixels, user mask) and the 3D Bragg mask (regions
    around found and predicted peaks, as a table) of a scan entry, with a picture."""
    input:
        scan=rules.ingest_scan.output.scan,
        peaks=rules.find_peaks.output.peaks,
        orientation=volumes_orientation,
        user_mask=user_mask,
    output:
        mask=outputs.MASK,
        png=report(outputs.MASK_PNG, category="Masks",
                   subcategory="{sample} {temperature}", caption="../report/mask.rst"),
    params:
        settings=settings_file(SETTINGS.mask_scan()),
    log:
        "logs/mask_scan/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/mask_scan/{sample}/{temperature}/{entry}.tsv"
    threads: RESOURCES["mask_scan"].threads
    resources:
        mem_mb=RESOURCES["mask_scan"].mem_mb,
        runtime=RESOURCES["mask_scan"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow mask_scan --settings-file {params.settings:q} --scan {input.scan:q}"
        " --peaks {input.peaks:q} --orientation {input.orientation:q} --out {output.mask:q}"
        " --png {output.png:q} > {log:q} 2>&1"


rule transform_frames:
    """Map every unmasked pixel of frames [first, stop) of a scan entry to (H, K, L) and
    accumulate corrected intensity and weight on the sample's grid: every kind of volume
    from one read of the frames."""
    input:
        scan=rules.ingest_scan.output.scan,
        orientation=volumes_orientation,
        grid=volumes_grid,
        mask=rules.mask_scan.output.mask,
    output:
        volumes=temp([fill(outputs.VOLUME_PART, kind=kind) for kind in TRANSFORM_KINDS]),
    params:
        settings=lambda w: settings_file(SETTINGS.transform_frames(w.sample)),
    log:
        "logs/transform_frames/{sample}/{temperature}/{entry}/{frames}.log",
    benchmark:
        "benchmarks/transform_frames/{sample}/{temperature}/{entry}/{frames}.tsv"
    threads: RESOURCES["transform_frames"].threads
    resources:
        mem_mb=RESOURCES["transform_frames"].mem_mb,
        runtime=RESOURCES["transform_frames"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow transform_frames --settings-file {params.settings:q} --threads {threads}"
        " --scan {input.scan:q}"
        " --orientation {input.orientation:q} --grid {input.grid:q} --mask {input.mask:q}"
        " --frames {wildcards.frames:q} --out {output.volumes:q} > {log:q} 2>&1"


rule transform_background:
    """The background a scan entry names (scans table: background) transformed like the
    entry, on its grid with its orientation, mask and corrections, in the entry's units
    (monitor, else frame time): what sum_chunks subtracts."""
    input:
        scan=rules.ingest_scan.output.scan,
        background=background_scan,
        orientation=volumes_orientation,
        grid=volumes_grid,
        mask=rules.mask_scan.output.mask,
    output:
        volumes=temp([fill(outputs.BACKGROUND_PART, kind=kind) for kind in TRANSFORM_KINDS]),
    params:
        settings=lambda w: settings_file(SETTINGS.transform_background(w.sample)),
    log:
        "logs/transform_background/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/transform_background/{sample}/{temperature}/{entry}.tsv"
    threads: RESOURCES["transform_frames"].threads
    resources:
        mem_mb=RESOURCES["transform_frames"].mem_mb,
        runtime=RESOURCES["transform_frames"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow transform_background --settings-file {params.settings:q} --threads {threads}"
        " --scan {input.scan:q} --background {input.background:q}"
        " --orientation {input.orientation:q} --grid {input.grid:q} --mask {input.mask:q}"
        " --out {output.volumes:q} > {log:q} 2>&1"


rule sum_chunks:
    """The volumes of one scan entry (every kind): the sum of its frame chunks, with slice
    pictures."""
    input:
        parts=transform_parts,
        background=background_parts,
    output:
        volumes=[fill(outputs.ENTRY_VOLUME, kind=kind) for kind in TRANSFORM_KINDS],
        pngs=report([fill(outputs.ENTRY_VOLUME_PNG, kind=kind) for kind in TRANSFORM_KINDS],
                    category="Volumes", subcategory="{sample} {temperature}",
                    caption="../report/volume.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.sum_chunks(w.sample)),
        title="{sample}/{temperature}/{entry}",
        background=lambda w, input: (" --background " + " ".join(shlex.quote(p) for p in
                                                                  input.background)
                                     if input.background else ""),
        # (a preview's entry: its blocks' volumes, which the next preview sums again, and its
        # pictures are its merged volume's)
        keep=lambda w: " --keep-inputs --preview" if entry_blocks(scan_of(w)) else "",
    log:
        "logs/sum_chunks/{sample}/{temperature}/{entry}.log",
    benchmark:
        "benchmarks/sum_chunks/{sample}/{temperature}/{entry}.tsv"
    threads: RESOURCES["sum_chunks"].threads
    resources:
        mem_mb=RESOURCES["sum_chunks"].mem_mb,
        runtime=RESOURCES["sum_chunks"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow sum_chunks --settings-file {params.settings:q} --title {params.title:q}"
        " --inputs {input.parts:q}{params.background}{params.keep} --out {output.volumes:q}"
        " --png {output.pngs:q} > {log:q} 2>&1"


rule scale_entries:
    """The scales of a sample's entries at one temperature (a smooth scale per entry in phi,
    and the absorption surface, detector response and offset reduction.scaling asks for),
    fitted on Laue-equivalent voxels away from the Bragg nodes; chi^2/nu and CC1/2 before
    and after in its file, log and picture."""
    input:
        volumes=lambda w: entries_files(w, outputs.ENTRY_VOLUME, kind=SCALING_KIND),
        bragg_volumes=lambda w: (entries_files(w, outputs.ENTRY_VOLUME, kind="transform")
                                 if SCALING_KIND != "transform" and "transform" in TRANSFORM_KINDS
                                 else []),
        scans=lambda w: entries_files(w, outputs.SCAN),
        masks=lambda w: entries_files(w, outputs.MASK),
        orientation=volumes_orientation,
    output:
        scales=outputs.SCALES,
        png=report(outputs.SCALES_PNG, category="Merged volumes", subcategory="{sample}",
                   caption="../report/scales.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.scale_entries(w.sample, w.temperature)),
        bragg=lambda w, input: option("--bragg-volumes", input.bragg_volumes),
    log:
        "logs/scale_entries/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/scale_entries/{sample}/{temperature}.tsv"
    threads: RESOURCES["scale_entries"].threads
    resources:
        mem_mb=RESOURCES["scale_entries"].mem_mb,
        runtime=RESOURCES["scale_entries"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow scale_entries --settings-file {params.settings:q} --volumes {input.volumes:q}"
        "{params.bragg} --scans {input.scans:q} --masks {input.masks:q}"
        " --orientation {input.orientation:q} --out {output.scales:q} --png {output.png:q}"
        " > {log:q} 2>&1"


rule merge_entries:
    """The volume of a sample at one temperature: signal and weight of its entries summed,
    then divided, so the gaps of one entry are filled by the others (entries without usable
    signal left out when the orientation step says so)."""
    input:
        volumes=lambda w: entries_files(w, outputs.ENTRY_VOLUME, kind=w.kind),
        orientation=volumes_orientation,
        # (a preview's merge is unscaled: common.smk's final_only)
        scales=lambda w: [outputs.SCALES] if scaled_merge(w) else [],
        # (the scales apply at each voxel's crossings: the entries' geometry and pixel masks)
        scans=lambda w: entries_files(w, outputs.SCAN) if scaled_merge(w) else [],
        masks=lambda w: entries_files(w, outputs.MASK) if scaled_merge(w) else [],
    output:
        volume=outputs.MERGED_VOLUME,
        png=report(outputs.MERGED_VOLUME_PNG, category="Merged volumes",
                   subcategory="{sample}", caption="../report/volume.rst"),
        statistics=report(outputs.STATISTICS_PNG,
                          category="Merged volumes", subcategory="{sample}",
                          caption="../report/statistics.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.merge_entries(w.kind, w.sample, w.temperature)),
        title="{sample}/{temperature}",
        scales=lambda w, input: (option("--scales", input.scales)
                                 + option("--scans", input.scans)
                                 + option("--masks", input.masks)
                                 + (" --apply auto" if scaled_merge(w) and SCALING_APPLY == "auto"
                                    else "")
                                 + (" --unscaled-preview" if SCALING_APPLIED
                                    and not scaled_merge(w) else "")
                                 + ("" if final_only(w.sample, w.temperature) else " --preview")),
    log:
        "logs/merge_entries/{sample}/{temperature}/{kind}.log",
    benchmark:
        "benchmarks/merge_entries/{sample}/{temperature}/{kind}.tsv"
    threads: RESOURCES["merge_entries"].threads
    resources:
        mem_mb=RESOURCES["merge_entries"].mem_mb,
        runtime=RESOURCES["merge_entries"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow merge_entries --settings-file {params.settings:q} --title {params.title:q}"
        " --inputs {input.volumes:q} --orientation {input.orientation:q}{params.scales}"
        " --out {output.volume:q} --png {output.png:q}"
        " --statistics-png {output.statistics:q} > {log:q} 2>&1"


rule symmetrize:
    """The merged volume symmetrised by the Laue group: signal and weight summed over the
    equivalent positions of every voxel, then divided."""
    input:
        volume=rules.merge_entries.output.volume,
    output:
        volume=outputs.SYMMETRIZED_VOLUME,
        png=report(outputs.SYMMETRIZED_VOLUME_PNG,
                   category="Merged volumes", subcategory="{sample}",
                   caption="../report/volume.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.symmetrize(w.sample)),
    log:
        "logs/symmetrize/{sample}/{temperature}/{kind}.log",
    benchmark:
        "benchmarks/symmetrize/{sample}/{temperature}/{kind}.tsv"
    threads: RESOURCES["symmetrize"].threads
    resources:
        mem_mb=RESOURCES["symmetrize"].mem_mb,
        runtime=RESOURCES["symmetrize"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow symmetrize --settings-file {params.settings:q} --input {input.volume:q}"
        " --out {output.volume:q} --png {output.png:q} > {log:q} 2>&1"


rule temperature_series:
    """One slice of a sample's merged volume at every temperature, side by side."""
    # a picture from one plane of each volume (read alone): on a cluster it runs in the
    # submitting Snakemake, not as a SLURM job of its own (one wave of queue wait less)
    localrule: True
    input:
        merged_volumes,
    output:
        png=report(outputs.TEMPERATURE_SERIES_PNG,
                   category="Temperature series", caption="../report/temperature_series.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.temperature_series(w.sample)),
    log:
        "logs/temperature_series/{sample}/{kind}.log",
    benchmark:
        "benchmarks/temperature_series/{sample}/{kind}.tsv"
    threads: RESOURCES["temperature_series"].threads
    resources:
        mem_mb=RESOURCES["temperature_series"].mem_mb,
        runtime=RESOURCES["temperature_series"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow temperature_series --settings-file {params.settings:q} --inputs {input:q}"
        " --png {output.png:q} > {log:q} 2>&1"
