# Where it hurts: cross-fitted slice discovery beside the paper's clustering (hetcv.slices).
rule slices:
    input:
        features=dataset_files("features"),
        manifest=PATHS["manifest"],
        images=images_of,  # for slices.embedding: pixels
    output:
        **summary_tables("slices"),
        slices_per_sample=PATHS["slices_per_sample"],
    log:
        "logs/slices/{dataset}.log",
    benchmark:
        "logs/benchmarks/slices/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("slices"),
    script:
        "../scripts/slices.py"


rule slices_figure:
    input:
        slices_per_sample=rules.slices.output.slices_per_sample,
        slices=rules.slices.output.slices,
        manifest=PATHS["manifest"],
        images=images_of,
    output:
        **registered(output_files("figure", ["slices"]), "Where it hurts"),
    log:
        "logs/slices_figure/{dataset}.log",
    benchmark:
        "logs/benchmarks/slices_figure/{dataset}.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("slices_figure"),
    script:
        "../scripts/slices_figure.py"
