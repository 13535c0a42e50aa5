rule cluster:
    input:
        features=each_fold("features"),
        manifest=rules.prepare.output.manifest,
    output:
        assignments=each_algorithm("assignments"),
        cluster_stats=each_algorithm("cluster_stats"),
        pairs=each_algorithm("cluster_pairs"),
        runs=each_algorithm("cluster_runs"),
    log:
        "logs/cluster/{dataset}/n{n}.log",
    benchmark:
        "logs/benchmarks/cluster/{dataset}/n{n}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=params_of("cluster"),
    script:
        "../scripts/cluster.py"


rule summarize:
    input:
        runs=dataset_files("cluster_runs"),
        cluster_stats=dataset_files("cluster_stats"),
        pairs=dataset_files("cluster_pairs"),
        selected_assignments=dataset_files("assignments", [STUDY.selected["algorithm"]]),
        features=dataset_files("features"),
        manifest=rules.prepare.output.manifest,
    output:
        **summary_tables(*SUMMARY_TABLES),
    log:
        "logs/summarize/{dataset}.log",
    benchmark:
        "logs/benchmarks/summarize/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=params_of("summarize"),
    script:
        "../scripts/summarize.py"


rule subgroup_variants:
    input:
        features=dataset_files("features"),
        manifest=rules.prepare.output.manifest,
    output:
        variants=PATHS["variants"],
    log:
        "logs/subgroup_variants/{dataset}.log",
    benchmark:
        "logs/benchmarks/subgroup_variants/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=params_of("subgroup_variants"),
    script:
        "../scripts/subgroup_variants.py"
