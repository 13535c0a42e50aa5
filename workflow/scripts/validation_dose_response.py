"""Draw the heterogeneity index on the benchmark's ladder (dose-response)."""

from hetcv.jobs import run_from_snakemake
from hetcv.validation_dose_response import run_validation_dose_response_job

run_from_snakemake(snakemake, run_validation_dose_response_job)
