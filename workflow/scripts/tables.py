"""Write the paper's Table 1, Table 2 and the CV table of one dataset (CSV, Markdown, LaTeX)."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_tables_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_tables_job(
        summary=dict(snakemake.input.items()),
        out=dict(snakemake.output.items()),
        **json.loads(snakemake.params.tables),
    )
