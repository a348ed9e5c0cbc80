# Previews of a scan in progress (hklflow watch): each block of frames that landed between
# two previews is searched, masked and transformed once (hklflow.planning.live_files.
# landed_block_marker stands for its frames); the entry's peaks are its blocks' put together
# (find_peaks --blocks) and its volumes their sum (sum_chunks --keep-inputs).  The scan file
# grows with every preview, and a block reads only its own frames of it: it is an ancient
# input, and what a block does depend on in it (the calibration, the row's settings other than
# how many frames have landed) are inputs and params of their own.  A complete scan goes
# through the batch rules, once, and hklflow watch removes its blocks.


rule provisional_orientation:
    """The orientation of a preview temperature's masks, transforms and merges: its refined
    orientation as its first preview refined it, kept (an ancient input) while every later
    preview refines it again; hklflow watch replaces it once the refined one has moved some
    pixel's (H, K, L) by more than live.reorient_voxels (hklflow.live.orientation), and the
    final results use the refined one."""
    input:
        orientation=ancient(outputs.ORIENTATION),
    output:
        orientation=provisional_orientation("{sample}", "{temperature}"),
    log:
        "logs/provisional_orientation/{sample}/{temperature}.log",
    conda:
        CONDA_ENV
    shell:
        "cp {input.orientation:q} {output.orientation:q} > {log:q} 2>&1"


rule provisional_grid:
    """The grid of the transforms of a sample's previews: its grid as define_grid made it at
    the sample's first preview, kept (an ancient input) while define_grid writes its file
    again for every scan at a new detector position; hklflow watch replaces it only when
    that file's grid differs (hklflow.live.grid), and the final results use the sample's
    grid."""
    # (a copy: no SLURM job, like define_grid)
    localrule: True
    input:
        grid=ancient(outputs.GRID),
    output:
        grid=provisional_grid("{sample}"),
    log:
        "logs/provisional_grid/{sample}.log",
    conda:
        CONDA_ENV
    shell:
        "cp {input.grid:q} {output.grid:q} > {log:q} 2>&1"


rule find_peaks_block:
    """The peak search of one block of frames of a scan in progress (no picture: the
    entry's peaks, its blocks' put together, have one)."""
    group: peaks_group
    input:
        scan=ancient(outputs.SCAN),
        block=block_marker,
        calibration=lambda w: scan_calibration(w, outputs.GEOMETRY_PONI),
        user_mask=user_mask,
    output:
        peaks=outputs.BLOCK_PEAKS,
    params:
        settings=settings_file(SETTINGS.find_peaks()),
        row=block_row_settings,
    log:
        "logs/find_peaks_block/{sample}/{temperature}/{entry}/{frames}.log",
    benchmark:
        "benchmarks/find_peaks_block/{sample}/{temperature}/{entry}/{frames}.tsv"
    threads: RESOURCES["find_peaks"].threads
    resources:
        mem_mb=RESOURCES["find_peaks"].mem_mb,
        runtime=RESOURCES["find_peaks"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow find_peaks --settings-file {params.settings:q} --threads {threads}"
        " --scan {input.scan:q} --frames {wildcards.frames:q} --out {output.peaks:q}"
        " > {log:q} 2>&1"


rule mask_block:
    """The masks of one block of frames of a scan in progress, from its own peaks and the
    temperature's orientation."""
    input:
        scan=ancient(outputs.SCAN),
        block=block_marker,
        calibration=lambda w: scan_calibration(w, outputs.GEOMETRY_PONI),
        peaks=rules.find_peaks_block.output.peaks,
        orientation=volumes_orientation,
        user_mask=user_mask,
    output:
        mask=outputs.BLOCK_MASK,
    params:
        settings=settings_file(SETTINGS.mask_scan()),
        row=block_row_settings,
    log:
        "logs/mask_block/{sample}/{temperature}/{entry}/{frames}.log",
    benchmark:
        "benchmarks/mask_block/{sample}/{temperature}/{entry}/{frames}.tsv"
    threads: RESOURCES["mask_scan"].threads
    resources:
        mem_mb=RESOURCES["mask_scan"].mem_mb,
        runtime=RESOURCES["mask_scan"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow mask_scan --settings-file {params.settings:q} --scan {input.scan:q}"
        " --peaks {input.peaks:q} --orientation {input.orientation:q} --out {output.mask:q}"
        " > {log:q} 2>&1"


rule transform_block:
    """One block of frames of a scan in progress mapped to (H, K, L), every kind of volume:
    kept until the scan is complete, summed into the entry's volumes at every preview."""
    input:
        scan=ancient(outputs.SCAN),
        block=block_marker,
        calibration=lambda w: scan_calibration(w, outputs.GEOMETRY_PONI),
        orientation=volumes_orientation,
        grid=volumes_grid,
        mask=rules.mask_block.output.mask,
    output:
        volumes=[fill(outputs.BLOCK_VOLUME, kind=kind) for kind in TRANSFORM_KINDS],
    params:
        settings=lambda w: settings_file(SETTINGS.transform_frames(w.sample)),
        row=block_row_settings,
    log:
        "logs/transform_block/{sample}/{temperature}/{entry}/{frames}.log",
    benchmark:
        "benchmarks/transform_block/{sample}/{temperature}/{entry}/{frames}.tsv"
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
