rule validation:
    input:
        unpack(validation_inputs),
    output:
        table=PATHS["validation_table"],
        tuning=PATHS["validation_tuning"],
        summary=PATHS["validation_summary"],
    log:
        "logs/validation/table.log",
    benchmark:
        "logs/benchmarks/validation/table.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        settings=params_of("validation"),
    script:
        "../scripts/validation.py"


rule validation_figure:
    input:
        table=rules.validation.output.table,
    output:
        png=PATHS["validation_figure"].format(extension="png"),
        pdf=PATHS["validation_figure"].format(extension="pdf"),
    log:
        "logs/validation/figure.log",
    benchmark:
        "logs/benchmarks/validation/figure.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("validation_figure"),
    script:
        "../scripts/validation_figure.py"


rule validation_dose_response:
    input:
        table=rules.validation.output.table,
    output:
        png=PATHS["validation_dose_response"].format(extension="png"),
        pdf=PATHS["validation_dose_response"].format(extension="pdf"),
    log:
        "logs/validation/dose_response.log",
    benchmark:
        "logs/benchmarks/validation/dose_response.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=params_of("validation_dose_response"),
    script:
        "../scripts/validation_dose_response.py"


# The benchmark's target: `make validate` runs it with config/validation.yaml.
rule validate:
    input:
        rules.validation.output,
        rules.validation_figure.output,
        rules.validation_dose_response.output,
