# A multi-label dataset is analysed through its views (hetcv.label_names): one binary dataset per
# label and the macro view, derived from the one model's held-out tables. Cheap: local.
localrules:
    label_manifest,
    label_view,


rule label_manifest:
    input:
        manifest=view_parent("manifest"),
    output:
        manifest=PATHS["manifest"],
    log:
        "logs/label_manifest/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(STUDY.views),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("label_manifest"),
    script:
        "../scripts/label_manifest.py"


rule label_view:
    input:
        features=view_parent("features"),
    output:
        features=PATHS["features"],
    log:
        "logs/label_view/{dataset}/n{n}/fold{fold}.log",
    wildcard_constraints:
        dataset=one_of(STUDY.views),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("label_view"),
    script:
        "../scripts/label_view.py"


rule labels:
    input:
        cv=view_tables("cv"),
    output:
        **summary_tables("labels"),
    log:
        "logs/labels/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(STUDY.multilabel_datasets),
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("labels"),
    script:
        "../scripts/labels.py"
