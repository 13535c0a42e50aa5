rule prepare:
    input:
        unpack(source_inputs),
    output:
        images="results/{dataset}/data/images.npy",
        manifest="results/{dataset}/data/manifest.parquet",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        prepare=prepare_params,
    script:
        "../scripts/prepare.py"


rule split:
    input:
        manifest="results/{dataset}/data/manifest.parquet",
    output:
        split="results/{dataset}/splits/n{n}.parquet",
    log:
        "logs/split/{dataset}/n{n}.log",
    benchmark:
        "benchmarks/split/{dataset}/n{n}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        split=split_params,
    script:
        "../scripts/split.py"
