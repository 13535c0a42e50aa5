"""Draw Figures 2–5 and the cluster-number exploration of one dataset."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_figures_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_figures_job(
        summary=dict(snakemake.input.items()),
        out=dict(snakemake.output.items()),
        **json.loads(snakemake.params.figures),
    )
