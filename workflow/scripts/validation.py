"""Score the planted-subgroup benchmark: recovery, baselines and the null calibration."""

from hetcv.jobs import run_from_snakemake
from hetcv.validation import run_validation_job

run_from_snakemake(snakemake, run_validation_job)
