# The total PDF and the 3D-DeltaPDF of every sample at every temperature (reduction.pdf),
# from the symmetrised volume (the merged one without symmetrisation), and the DeltaPDF's
# temperature series.


rule total_pdf:
    """The total PDF: the tapered Fourier transform of the volume as measured."""
    input:
        volume=pdf_input(TOTAL_PDF_KIND),
    output:
        pdf=outputs.TOTAL_PDF,
        png=report(outputs.TOTAL_PDF_PNG, category="PDF",
                   subcategory="{sample}", caption="../report/pdf.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.total_pdf(w.sample)),
    log:
        "logs/total_pdf/{sample}/{temperature}.log",
    benchmark:
        "benchmarks/total_pdf/{sample}/{temperature}.tsv"
    threads: RESOURCES["total_pdf"].threads
    resources:
        mem_mb=RESOURCES["total_pdf"].mem_mb,
        runtime=RESOURCES["total_pdf"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow total_pdf --settings-file {params.settings:q} --threads {threads}"
        " --input {input.volume:q} --out {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"


rule delta_pdf:
    """The 3D-DeltaPDF: every allowed reflection punched and filled, then the tapered
    Fourier transform (pdf.nxs from DELTA_PDF_FILES' kind; transform_pdf.nxs optional)."""
    input:
        volume=lambda w: pdf_input(PDF_FILE_KIND[w.pdf]),
    output:
        pdf=outputs.DELTA_PDF,
        png=report(outputs.DELTA_PDF_PNG, category="PDF",
                   subcategory="{sample}", caption="../report/pdf.rst"),
    wildcard_constraints:
        pdf="pdf|transform_pdf",
    params:
        settings=lambda w: settings_file(SETTINGS.delta_pdf(w.sample)),
    log:
        "logs/delta_pdf/{sample}/{temperature}/{pdf}.log",
    benchmark:
        "benchmarks/delta_pdf/{sample}/{temperature}/{pdf}.tsv"
    threads: RESOURCES["delta_pdf"].threads
    resources:
        mem_mb=RESOURCES["delta_pdf"].mem_mb,
        runtime=RESOURCES["delta_pdf"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow delta_pdf --settings-file {params.settings:q} --threads {threads}"
        " --input {input.volume:q} --out {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"


rule pdf_temperature_series:
    """One plane of the sample's DeltaPDF (pdf.nxs) at every temperature."""
    # a picture from one plane of each PDF (read alone): runs in the submitting Snakemake on
    # a cluster, as temperature_series
    localrule: True
    input:
        lambda w: [fill(outputs.DELTA_PDF, sample=w.sample, temperature=t, pdf="pdf")
                   for t in EXP.pdf_temperatures_of(w.sample)],
    output:
        png=report(outputs.PDF_SERIES_PNG, category="PDF",
                   caption="../report/pdf_temperature_series.rst"),
    params:
        settings=lambda w: settings_file(SETTINGS.pdf_temperature_series(w.sample)),
    log:
        "logs/pdf_temperature_series/{sample}.log",
    benchmark:
        "benchmarks/pdf_temperature_series/{sample}.tsv"
    threads: RESOURCES["pdf_temperature_series"].threads
    resources:
        mem_mb=RESOURCES["pdf_temperature_series"].mem_mb,
        runtime=RESOURCES["pdf_temperature_series"].runtime,
    conda:
        CONDA_ENV
    shell:
        "hklflow pdf_temperature_series --settings-file {params.settings:q} --inputs {input:q}"
        " --png {output.png:q} > {log:q} 2>&1"
