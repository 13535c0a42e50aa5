"""Write clusters_per_sample.csv: the selected clustering's consensus label per sample."""

from hetcv.export_clusters import run_export_clusters_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_export_clusters_job)
