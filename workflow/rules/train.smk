rule train:
    input:
        unpack(train_inputs),
    output:
        model=PATHS["model"],
        features=PATHS["features"],
        history=PATHS["history"],
    log:
        "logs/train/{dataset}/n{n}/fold{fold}.log",
    benchmark:
        "logs/benchmarks/train/{dataset}/n{n}/fold{fold}.tsv"
    wildcard_constraints:
        dataset=one_of(STUDY.image_datasets),
    conda:
        "../envs/torch.yaml"
    threads: 1  # small CPU batches: two 1-thread jobs train 1.5× faster than one 2-thread job
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=params_of("train"),
    script:
        "../scripts/train.py"
