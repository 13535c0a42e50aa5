"""Cluster each held-out fold of one sample size with every algorithm, k and repeat."""

from hetcv.cluster import run_cluster_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_cluster_job)
