rule cluster:
    input:
        features="results/{dataset}/n{n}/fold{fold}/features.parquet",
        manifest="results/{dataset}/data/manifest.parquet",
    output:
        assignments="results/{dataset}/n{n}/fold{fold}/clusters_{algorithm}.parquet",
        clusters="results/{dataset}/n{n}/fold{fold}/cluster_stats_{algorithm}.parquet",
        pairs="results/{dataset}/n{n}/fold{fold}/cluster_pairs_{algorithm}.parquet",
        runs="results/{dataset}/n{n}/fold{fold}/cluster_runs_{algorithm}.parquet",
    log:
        "logs/cluster/{dataset}/n{n}/fold{fold}/{algorithm}.log",
    benchmark:
        "benchmarks/cluster/{dataset}/n{n}/fold{fold}/{algorithm}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        cluster=cluster_params,
    script:
        "../scripts/cluster.py"


rule summarize:
    input:
        runs=dataset_cluster_outputs("cluster_runs"),
        clusters=dataset_cluster_outputs("cluster_stats"),
        pairs=dataset_cluster_outputs("cluster_pairs"),
        selected_assignments=dataset_cluster_outputs(
            "clusters", [config["clustering"]["selected"]["algorithm"]]
        ),
        features=dataset_features,
        manifest="results/{dataset}/data/manifest.parquet",
    output:
        **{
            table: f"results/{{dataset}}/summary/{table}.parquet"
            for table in SUMMARY_TABLES
        },
    log:
        "logs/summarize/{dataset}.log",
    benchmark:
        "benchmarks/summarize/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        summarize=summarize_params,
    script:
        "../scripts/summarize.py"


rule subgroup_variants:
    input:
        features=dataset_features,
        manifest="results/{dataset}/data/manifest.parquet",
    output:
        variants="results/{dataset}/summary/subgroup_variants.parquet",
    log:
        "logs/subgroup_variants/{dataset}.log",
    benchmark:
        "benchmarks/subgroup_variants/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        variants=variants_params,
    script:
        "../scripts/subgroup_variants.py"
