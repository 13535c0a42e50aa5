# Cheap aggregation: on a cluster these run where Snakemake runs, not through the queue.
localrules:
    plan,
    tables,
    figures,
    export_clusters,
    subgroup_heatmap,
    summary_md,


rule plan:
    input:
        **summary_tables("fold_cv"),
    output:
        **summary_tables("planning"),
    log:
        "logs/plan/{dataset}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("plan"),
    script:
        "../scripts/plan.py"


rule tables:
    input:
        **summary_tables("cv", "cluster_stats", "cluster_pairs", "metadata", "planning"),
    output:
        **registered(output_files("table", TABLES), "Tables"),
    log:
        "logs/tables/{dataset}.log",
    benchmark:
        "logs/benchmarks/tables/{dataset}.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("tables"),
    script:
        "../scripts/tables.py"


rule figures:
    input:
        **summary_tables(
            "cv",
            "cluster_stats",
            "fold_cv",
            "correlation",
            "validity",
            "metadata",
            "planning",
        ),
    output:
        **registered(output_files("figure", FIGURES), "Figures"),
    log:
        "logs/figures/{dataset}.log",
    benchmark:
        "logs/benchmarks/figures/{dataset}.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("figures"),
    script:
        "../scripts/figures.py"


rule export_clusters:
    input:
        fold_assignments=dataset_files(
            "fold_assignments", [STUDY.selected["algorithm"]]
        ),
        features=dataset_files("features"),
        manifest=PATHS["manifest"],
    output:
        clusters_per_sample=PATHS["clusters_per_sample"],
    log:
        "logs/export_clusters/{dataset}.log",
    benchmark:
        "logs/benchmarks/export_clusters/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("export_clusters"),
    script:
        "../scripts/export_clusters.py"


rule cluster_pictures:
    input:
        clusters_per_sample=rules.export_clusters.output.clusters_per_sample,
        first_folds=dataset_files("features", folds=[0]),
        images=rules.prepare.output.images,
        manifest=rules.prepare.output.manifest,
        cluster_stats=rules.summarize.output.cluster_stats,
    output:
        **registered(output_files("figure", PICTURES), "Cluster pictures"),
    log:
        "logs/cluster_pictures/{dataset}.log",
    benchmark:
        "logs/benchmarks/cluster_pictures/{dataset}.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("cluster_pictures"),
    script:
        "../scripts/cluster_pictures.py"


rule subgroup_heatmap:
    input:
        clusters_per_sample=rules.export_clusters.output.clusters_per_sample,
        manifest=rules.prepare.output.manifest,
    output:
        **registered(output_files("figure", ["subgroups"]), "Cluster pictures"),
    log:
        "logs/subgroup_heatmap/{dataset}.log",
    benchmark:
        "logs/benchmarks/subgroup_heatmap/{dataset}.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("subgroup_heatmap"),
    script:
        "../scripts/subgroup_heatmap.py"


rule summary_md:
    input:
        unpack(summary_md_inputs),
    output:
        summary=report(
            PATHS["summary_md"], caption="../report/summary.rst", category="Summary"
        ),
    log:
        "logs/summary_md.log",
    benchmark:
        "logs/benchmarks/summary_md.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("summary_md"),
    script:
        "../scripts/summary_md.py"
