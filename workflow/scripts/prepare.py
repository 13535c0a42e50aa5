"""Decode, validate and resize one dataset's images; write images.npy and manifest.parquet."""

import json
import logging

from hetcv.data import run_prepare_job
from hetcv.errors import one_line_errors

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_prepare_job(
        out_images=snakemake.output.images,
        out_manifest=snakemake.output.manifest,
        **json.loads(snakemake.params.prepare),
    )
