"""Check a features table; write its manifest and every held-out row."""

from hetcv.import_features import run_import_features_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_import_features_job)
