rule cluster:
    input:
        features=each_fold("features"),
        manifest=rules.prepare.output.manifest,
    output:
        fold_assignments=each_algorithm("fold_assignments"),
        fold_cluster_stats=each_algorithm("fold_cluster_stats"),
        fold_cluster_pairs=each_algorithm("fold_cluster_pairs"),
        fold_cluster_runs=each_algorithm("fold_cluster_runs"),
    log:
        "logs/cluster/{dataset}/n{n}.log",
    benchmark:
        "logs/benchmarks/cluster/{dataset}/n{n}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("cluster"),
    script:
        "../scripts/cluster.py"


rule summarize:
    input:
        fold_cluster_runs=dataset_files("fold_cluster_runs"),
        fold_cluster_stats=dataset_files("fold_cluster_stats"),
        fold_cluster_pairs=dataset_files("fold_cluster_pairs"),
        selected_fold_assignments=dataset_files(
            "fold_assignments", [STUDY.selected["algorithm"]]
        ),
        features=dataset_files("features"),
        manifest=rules.prepare.output.manifest,
    output:
        **summary_tables(*SUMMARY_TABLES),
    log:
        "logs/summarize/{dataset}.log",
    benchmark:
        "logs/benchmarks/summarize/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("summarize"),
    script:
        "../scripts/summarize.py"


rule subgroup_variants:
    input:
        features=dataset_files("features"),
        manifest=rules.prepare.output.manifest,
    output:
        variants=PATHS["subgroup_variants"],
    log:
        "logs/subgroup_variants/{dataset}.log",
    benchmark:
        "logs/benchmarks/subgroup_variants/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("subgroup_variants"),
    script:
        "../scripts/subgroup_variants.py"
