"""Compare plain, within-class and error-aware clustering on a dataset's known subgroups."""

from hetcv.jobs import run_from_snakemake
from hetcv.subgroups import run_variants_job

run_from_snakemake(snakemake, run_variants_job)
