"""Fit learning curves over the sample sizes and predict the n that meets each target."""

from hetcv.jobs import run_from_snakemake
from hetcv.plan import run_plan_job

run_from_snakemake(snakemake, run_plan_job)
