"""Score the planted-subgroup benchmark: recovery, baselines and the null calibration."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.validation import run_validation_job

KINDS = ("manifest", "cv", "features", "assignments", "runs")

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
settings = json.loads(snakemake.params.validation)
with one_line_errors():
    run_validation_job(
        inputs={
            name: {kind: list(snakemake.input[f"{name}_{kind}"]) for kind in KINDS}
            for name in settings["settings"]
        },
        out_table=snakemake.output.table,
        out_calibration=snakemake.output.calibration,
        out_summary=snakemake.output.summary,
        **settings,
    )
