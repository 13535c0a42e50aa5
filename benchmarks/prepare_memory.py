"""Peak memory of ``prepare`` for a study the size of the RSNA bone-age set.

Writes N synthetic grey PNGs (default 12,600 at 512×512) and a CSV in the csv-source layout,
runs the prepare job in a fresh process at 224 px, and prints its peak resident memory next to
the size of the final uint8 array, so the overhead can be read as a formula:
peak ≈ baseline (interpreter and libraries) + N × S² bytes (the output array) + one image.
Usage: ``python benchmarks/prepare_memory.py [N] [SOURCE_PX]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

MEASURE = """
import json, resource, sys, time
from hetcv.prepare import run_prepare_job
started = time.perf_counter()
run_prepare_job({}, *json.loads(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
BASELINE = """
import json, resource
import hetcv.sources, hetcv.io, pandas, PIL.Image, pyarrow.parquet
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12_600
    source_px = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    size = 224
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, size=(source_px, source_px), dtype=np.uint8)
        started = time.perf_counter()
        for i in range(count):
            Image.fromarray(np.roll(base, i, axis=0)).save(
                root / "images" / f"{i}.png", compress_level=1
            )
        pd.DataFrame(
            {
                "id": range(count),
                "boneage": rng.uniform(1, 228, count),
                "male": rng.random(count) < 0.5,
            }
        ).to_csv(root / "table.csv", index=False)
        written = time.perf_counter() - started
        outputs = {"images": str(root / "images.npy"), "manifest": str(root / "m.parquet")}
        params = {
            "source": {
                "kind": "csv",
                "csv": str(root / "table.csv"),
                "images": str(root / "images"),
                "id_column": "id",
                "extension": ".png",
                "target_column": "boneage",
            },
            "task": "regression",
            "image_size": size,
            "intensity": {"window": "dataset", "percentiles": [0.5, 99.5]},
            "resize": "stretch",
            "seed": 0,
        }
        measured = json.loads(
            subprocess.run(
                [sys.executable, "-c", MEASURE, json.dumps([outputs, params])],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        baseline = json.loads(
            subprocess.run(
                [sys.executable, "-c", BASELINE], check=True, capture_output=True, text=True
            ).stdout
        )["peak_mb"]
    array_mb = count * size * size / 2**20
    print(
        f"prepare: {count} images of {source_px}² px → {size} px "
        f"(writing them took {written:.0f} s)"
    )
    print(f"  time {measured['seconds']:.0f} s, peak RSS {measured['peak_mb']:.0f} MiB")
    print(
        f"  baseline after imports {baseline:.0f} MiB; final uint8 array {array_mb:.0f} MiB; "
        f"rest {measured['peak_mb'] - baseline - array_mb:.0f} MiB"
    )
    print(
        f"  formula: peak ≈ {baseline:.0f} MiB + N × {size}² B + one decoded image "
        f"({source_px**2 / 2**20:.2f} MiB here)"
    )


if __name__ == "__main__":
    main()
