"""Put a multi-label dataset's labels side by side, Holm-adjusted over labels and sizes."""

from hetcv.jobs import run_from_snakemake
from hetcv.labels import run_labels_job

run_from_snakemake(snakemake, run_labels_job)
