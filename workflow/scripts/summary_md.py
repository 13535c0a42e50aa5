"""Write results/summary.md: the verdict for every dataset."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_summary_md_job

TABLES = ("cv", "clusters", "correlation", "subgroups")

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
settings = json.loads(snakemake.params.summary)
with one_line_errors():
    run_summary_md_job(
        summaries={
            name: {table: snakemake.input[f"{name}_{table}"] for table in TABLES}
            for name in settings["datasets"]
        },
        out=snakemake.output.summary,
        **settings,
    )
