"""Aggregate one dataset's clusterings over folds and repeats, with their statistics."""

from hetcv.jobs import run_from_snakemake
from hetcv.summarize import run_summarize_job

run_from_snakemake(snakemake, run_summarize_job)
