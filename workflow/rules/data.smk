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
    conda:
        "../../envs/analysis.yaml"
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
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=params_of("split"),
    script:
        "../scripts/split.py"
