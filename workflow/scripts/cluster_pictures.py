"""Draw the PCA scatter and the cluster galleries of one dataset."""

from hetcv.jobs import run_from_snakemake
from hetcv.report import run_pictures_job

run_from_snakemake(snakemake, run_pictures_job)
