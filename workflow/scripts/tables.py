"""Write the paper's Table 1, Table 2 and the CV table of one dataset (CSV, Markdown, LaTeX)."""

from hetcv.jobs import run_from_snakemake
from hetcv.tables import run_tables_job

run_from_snakemake(snakemake, run_tables_job)
