rule prepare:
    input:
        unpack(source_inputs),
    output:
        images=PATHS["images"],
        manifest=PATHS["manifest"],
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(STUDY.image_datasets),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("prepare"),
    script:
        "../scripts/prepare.py"


rule split:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        split=PATHS["split"],
    log:
        "logs/split/{dataset}/n{n}.log",
    benchmark:
        "logs/benchmarks/split/{dataset}/n{n}.tsv"
    wildcard_constraints:
        dataset=one_of(STUDY.image_datasets),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("split"),
    script:
        "../scripts/split.py"


# A features source: the team's own model's held-out predictions and embeddings, no training.
# Selecting one (n, fold)'s rows is cheap: on a cluster it runs where Snakemake runs.
localrules:
    fold_features,


rule import_features:
    input:
        unpack(source_inputs),
    output:
        manifest=PATHS["manifest"],
        held_out=PATHS["held_out"],
    log:
        "logs/import_features/{dataset}.log",
    benchmark:
        "logs/benchmarks/import_features/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(STUDY.feature_datasets),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("import_features"),
    script:
        "../scripts/import_features.py"


rule fold_features:
    input:
        held_out=rules.import_features.output.held_out,
    output:
        features=PATHS["features"],
    log:
        "logs/fold_features/{dataset}/n{n}/fold{fold}.log",
    wildcard_constraints:
        dataset=one_of(STUDY.feature_datasets),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("fold_features"),
    script:
        "../scripts/fold_features.py"
