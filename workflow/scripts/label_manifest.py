"""Write a multi-label dataset's view manifest: one label's target, or the macro view's."""

from hetcv.jobs import run_from_snakemake
from hetcv.label_manifest import run_label_manifest_job

run_from_snakemake(snakemake, run_label_manifest_job)
