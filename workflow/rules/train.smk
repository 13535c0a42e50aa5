rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/{dataset}/n{n}/fold{fold}/model.pt",
        features="results/{dataset}/n{n}/fold{fold}/features.parquet",
        history="results/{dataset}/n{n}/fold{fold}/history.csv",
    log:
        "logs/train/{dataset}/n{n}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{dataset}/n{n}/fold{fold}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        train=train_params,
    script:
        "../scripts/train.py"
