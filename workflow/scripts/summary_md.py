"""Write results/summary.md: the verdict for every dataset."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_summary_md_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_summary_md_job(out=snakemake.output.summary, **json.loads(snakemake.params.summary))
