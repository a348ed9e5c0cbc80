# NXRefine's wrapper file of every sample at every temperature (output.nxrefine_wrapper):
# results/SAMPLE/nxrefine/SAMPLE_TLABEL.nxs, where NXRefine's NXReduce finds sample
# (two folders up), label ('nxrefine') and scan (TLABEL) from the path, and its scan
# directory results/SAMPLE/nxrefine/TLABEL/ (ENTRY.h5: links to the raw frames; NXRefine
# writes its own results there).  It links the results (volumes, PDFs, raw frames), so it
# is made after them and copies no large array.


rule nxrefine_wrapper:
    """NXRefine's wrapper file of a sample at one temperature: the sample, each entry's
    geometry in NXRefine's parameters, its peaks, and links to the raw frames, the volumes
    and the PDFs, so NeXpy and NXRefine open hklflow's results as their own."""
    input:
        orientation=rules.refine_temperature.output.orientation,
        scans=lambda w: entries_files(w, outputs.SCAN),
        peaks=lambda w: entries_files(w, outputs.PEAKS),
        masks=lambda w: entries_files(w, outputs.MASK),
        entry_volumes=entry_volumes,
        merged=[fill(outputs.MERGED_VOLUME, kind=kind) for kind in TRANSFORM_KINDS],
        symmetrized=([fill(outputs.SYMMETRIZED_VOLUME, kind=kind) for kind in TRANSFORM_KINDS]
                     if SYMMETRIZE else []),
        pdf=lambda w: list(nxrefine_pdf_links(w).values()),
    output:
        wrapper=outputs.NXREFINE_WRAPPER,
        # (files.nxrefine.scan_directory: the wrapper's stem less 'SAMPLE_')
        scan_directory=directory(outputs.NXREFINE_SCAN_DIRECTORY),
    params:
        settings=lambda w: settings_file(SETTINGS.nxrefine_wrapper(w.sample)),
        pdf=lambda w: [f"{n}={p}" for n, p in nxrefine_pdf_links(w).items()],
        symmetrized=lambda w, input: ["--symmetrized", *input.symmetrized] if SYMMETRIZE else [],
    log:
        "logs/nxrefine_wrapper/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/nxrefine_wrapper/{sample}/{temperature}.tsv"
    threads: RESOURCES["nxrefine_wrapper"].threads
    resources:
        mem_mb=RESOURCES["nxrefine_wrapper"].mem_mb,
        runtime=RESOURCES["nxrefine_wrapper"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow nxrefine_wrapper --settings-file {params.settings:q}"
        " --orientation {input.orientation:q} --scans {input.scans:q} --peaks {input.peaks:q}"
        " --masks {input.masks:q}"
        " --entry-volumes {input.entry_volumes:q} --merged {input.merged:q}"
        " {params.symmetrized:q} --pdf {params.pdf:q} --out {output.wrapper:q} > {log:q} 2>&1"
