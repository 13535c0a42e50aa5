"""Decode, validate and resize one dataset's images; write images.npy and manifest.parquet."""

from hetcv.jobs import run_from_snakemake
from hetcv.prepare import run_prepare_job

run_from_snakemake(snakemake, run_prepare_job)
