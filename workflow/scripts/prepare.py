"""Decode, validate and resize one dataset's images; write images.npy and manifest.parquet."""

from hetcv.data import run_prepare_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_prepare_job)
