# Cheap aggregation: on a cluster these run where Snakemake runs, not through the queue.
localrules:
    tables,
    figures,
    export_clusters,
    subgroup_heatmap,
    summary_md,


rule tables:
    input:
        **summary_inputs("cv", "clusters", "table1"),
    output:
        **registered(table_paths(), "Tables"),
    log:
        "logs/tables/{dataset}.log",
    benchmark:
        "benchmarks/tables/{dataset}.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        tables=tables_params,
    script:
        "../scripts/tables.py"


rule figures:
    input:
        **summary_inputs("cv", "clusters", "fold_cv", "correlation", "validity"),
    output:
        **registered(figure_paths(FIGURES), "Figures"),
    log:
        "logs/figures/{dataset}.log",
    benchmark:
        "benchmarks/figures/{dataset}.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        figures=figures_params,
    script:
        "../scripts/figures.py"


rule export_clusters:
    input:
        assignments=dataset_cluster_outputs(
            "clusters", [config["clustering"]["selected"]["algorithm"]]
        ),
        features=dataset_features,
    output:
        export="results/{dataset}/clusters_per_sample.csv",
    log:
        "logs/export_clusters/{dataset}.log",
    benchmark:
        "benchmarks/export_clusters/{dataset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        export=export_params,
    script:
        "../scripts/export_clusters.py"


rule cluster_pictures:
    input:
        export="results/{dataset}/clusters_per_sample.csv",
        first_folds=first_fold_features,
        images="results/{dataset}/data/images.npy",
        manifest="results/{dataset}/data/manifest.parquet",
        clusters="results/{dataset}/summary/clusters.parquet",
    output:
        **registered(figure_paths(PICTURES), "Cluster pictures"),
    log:
        "logs/cluster_pictures/{dataset}.log",
    benchmark:
        "benchmarks/cluster_pictures/{dataset}.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        pictures=pictures_params,
    script:
        "../scripts/cluster_pictures.py"


rule subgroup_heatmap:
    input:
        export="results/{dataset}/clusters_per_sample.csv",
        manifest="results/{dataset}/data/manifest.parquet",
    output:
        **registered(figure_paths(["subgroups"]), "Cluster pictures"),
    log:
        "logs/subgroup_heatmap/{dataset}.log",
    benchmark:
        "benchmarks/subgroup_heatmap/{dataset}.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        figures=figures_params,
    script:
        "../scripts/subgroup_heatmap.py"


rule summary_md:
    input:
        expand(
            "results/{dataset}/summary/{table}.parquet",
            dataset=DATASETS,
            table=["cv", "clusters", "correlation", "subgroups"],
        ),
    output:
        summary=report(
            "results/summary.md", caption="../report/summary.rst", category="Summary"
        ),
    log:
        "logs/summary_md.log",
    benchmark:
        "benchmarks/summary_md.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        summary=summary_md_params,
    script:
        "../scripts/summary_md.py"
