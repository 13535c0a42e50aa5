"""Draw the PCA scatter and the cluster galleries of one dataset."""

from hetcv.cluster_pictures import run_cluster_pictures_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_cluster_pictures_job)
