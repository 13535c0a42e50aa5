"""Draw the heterogeneity index on the benchmark's ladder (dose-response)."""

from hetcv.dose_response import run_dose_response_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_dose_response_job)
