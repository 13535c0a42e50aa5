rule validation:
    input:
        unpack(validation_inputs),
    output:
        table="results/validation/table.csv",
        tuning="results/validation/tuning.csv",
        summary="results/validation/summary.md",
    log:
        "logs/validation/table.log",
    benchmark:
        "logs/benchmarks/validation/table.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=params_of("validation"),
    script:
        "../scripts/validation.py"


rule validation_figure:
    input:
        table="results/validation/table.csv",
    output:
        png="results/validation/figure.png",
        pdf="results/validation/figure.pdf",
    log:
        "logs/validation/figure.log",
    benchmark:
        "logs/benchmarks/validation/figure.tsv"
    conda:
        "../../envs/plots.yaml"
    params:
        settings=params_of("validation_figure"),
    script:
        "../scripts/validation_figure.py"


rule validation_dose_response:
    input:
        table="results/validation/table.csv",
    output:
        png="results/validation/dose_response.png",
        pdf="results/validation/dose_response.pdf",
    log:
        "logs/validation/dose_response.log",
    benchmark:
        "logs/benchmarks/validation/dose_response.tsv"
    conda:
        "../../envs/plots.yaml"
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
