"""Write one (n, fold)'s held-out table of a multi-label dataset's view."""

from hetcv.jobs import run_from_snakemake
from hetcv.label_view import run_label_view_job

run_from_snakemake(snakemake, run_label_view_job)
