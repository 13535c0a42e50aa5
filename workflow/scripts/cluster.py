"""Cluster one held-out fold's features with every algorithm, for every k and repeat."""

from hetcv.analysis import run_cluster_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_cluster_job)
