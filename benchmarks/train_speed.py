"""Training and feature-extraction throughput: hetcv's code against a plain PyTorch loop.

Both sides use the same model (torchvision's architecture as ``hetcv.models.build_model``
builds it: any torchvision name or ``timm:<name>``), image size, batch size, optimiser
(``torch.optim.Adam``, fused, as ``hetcv.train.make_optimizer`` makes it), torch threads and
precision (bf16 autocast + channels_last on CUDA, fp32 on the CPU). hetcv's side is the code
the train rule runs: ``InputPipeline`` (uint8 images, on the GPU when they fit, normalised on
the device batch by batch) with ``train_epoch`` (and its learning-rate schedule) and
``evaluate``. The plain side is the textbook loop over images already normalised to float on
the device, and plain ``torch.inference_mode()`` inference in batches of the same size as
``evaluate``'s, each batch's results copied to the CPU. The two
are timed back to back, ``--rounds`` times (alternating which goes first); the ratio is the
median over rounds of hetcv / plain images per second (target ≥ 0.95), the rates shown are
the medians of each side.

On CUDA it also reports the peak GPU memory and the fraction of time the GPU was busy while
hetcv's own code ran (``nvidia-smi`` utilisation, sampled every 100 ms for
``--busy-seconds``). Usage: ``python benchmarks/train_speed.py [--arch resnet18]
[--image-size 32] ...``; prints the figures and appends them to ``--out`` (CSV).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hetcv.device import InputPipeline, select_device
from hetcv.held_out import EVAL_BATCH_SIZE, evaluate
from hetcv.models import build_model
from hetcv.optimisation import make_optimizer, make_schedule
from hetcv.train import train_epoch


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_images(images: np.ndarray, device: torch.device, mean, std) -> torch.Tensor:
    """The plain loop's data: normalised float, 3 channels, already on the device."""
    pixels = torch.from_numpy(images).float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    data = ((pixels - mean) / std).to(device)
    if device.type == "cuda":
        data = data.contiguous(memory_format=torch.channels_last)
    return data


def plain_epoch(model, data, labels, batches, optimizer, autocast) -> None:
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for rows in batches:
        with autocast:
            loss = loss_fn(model(data[rows])[0].float(), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def plain_inference(model, data, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Head outputs and features of every image, collected on the CPU."""
    model.eval()
    outputs, features = [], []
    with torch.inference_mode():
        for batch in data.split(EVAL_BATCH_SIZE):
            with autocast:
                out, feat = model(batch)
            outputs.append(out.float().cpu())
            features.append(feat.float().cpu())
    return torch.cat(outputs), torch.cat(features)


def timed(function, device: torch.device) -> float:
    synchronise(device)
    started = time.perf_counter()
    function()
    synchronise(device)
    return time.perf_counter() - started


def gpu_busy_fraction(step, device: torch.device, seconds: float) -> float:
    """Mean GPU utilisation (share of time a kernel ran, per ``nvidia-smi``) while ``step``
    runs back to back for ``seconds``; NaN when nvidia-smi is missing."""
    if shutil.which("nvidia-smi") is None:
        print("nvidia-smi not found: GPU busy fraction not measured")
        return float("nan")
    # nvidia-smi ignores CUDA_VISIBLE_DEVICES: name the card by its UUID. Samples go to a
    # file, since a terminated nvidia-smi may never flush a pipe.
    card = f"GPU-{torch.cuda.get_device_properties(device).uuid}"
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as log:
        sampler = subprocess.Popen(
            [
                "nvidia-smi",
                f"--id={card}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "--loop-ms=100",
                f"--filename={log.name}",
            ]
        )
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            step()
        synchronise(device)
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=10)
        samples = [int(line) for line in log.read().split() if line.isdigit()]
    return float(np.mean(samples[2:]) / 100) if len(samples) > 2 else float("nan")


def measure(args: argparse.Namespace, arch: str, device: torch.device) -> list[dict]:
    rng = np.random.default_rng(0)
    images = rng.integers(
        0, 256, size=(args.images, args.image_size, args.image_size), dtype=np.uint8
    )
    labels = torch.as_tensor(rng.integers(0, 2, size=args.images)).to(device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    torch.manual_seed(0)
    model = build_model(arch, 2, "none", args.image_size).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    # The same torch.optim optimiser on both sides: Adam with the fused implementation. hetcv's
    # side also steps its schedule (constant) after every step, as the train rule does.
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    hetcv_optimizer = make_optimizer(model.parameters(), 1e-4, 0.0, device)
    scheduler = make_schedule(hetcv_optimizer, "constant", 1)
    pipeline = InputPipeline(images, device, model.mean, model.std)
    data = plain_images(images, device, model.mean, model.std)
    rows = torch.arange(args.images)
    batches = list(
        torch.randperm(args.images, generator=torch.Generator().manual_seed(0)).split(
            args.batch_size
        )
    )
    steps = {
        ("train", "hetcv"): lambda: train_epoch(
            model,
            pipeline,
            batches,
            labels,
            nn.CrossEntropyLoss(),
            hetcv_optimizer,
            scheduler,
            autocast,
        ),
        ("train", "plain"): lambda: plain_epoch(model, data, labels, batches, optimizer, autocast),
        # Features copied back once, as the train rule does with the held-out fold's.
        ("extract", "hetcv"): lambda: [
            tensor.cpu() for tensor in evaluate(model, pipeline, rows, autocast)
        ],
        ("extract", "plain"): lambda: plain_inference(model, data, autocast),
    }
    for step in steps.values():  # warm-up: allocator, cuDNN autotuning, thread pools
        step()
    seconds = {key: [] for key in steps}
    for round_number in range(args.rounds):
        # Alternate which side goes first, so that neither always runs on a warmer cache.
        order = list(steps) if round_number % 2 == 0 else list(reversed(steps))
        for key in order:
            seconds[key].append(timed(steps[key], device))
    # hetcv's own GPU figures: busy fraction and peak memory while only its code runs.
    busy, peak = {}, {}
    for stage in ("train", "extract"):
        busy[stage] = peak[stage] = np.nan
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            busy[stage] = gpu_busy_fraction(steps[(stage, "hetcv")], device, args.busy_seconds)
            # The plain side's float copy of the images stays allocated: not hetcv's memory.
            plain_bytes = data.element_size() * data.nelement()
            peak[stage] = round((torch.cuda.max_memory_allocated(device) - plain_bytes) / 2**20)
    results = []
    for stage in ("train", "extract"):
        hetcv, plain = (np.array(seconds[(stage, side)]) for side in ("hetcv", "plain"))
        # Each round times both sides back to back, so the per-round ratio cancels the slow
        # drifts of a shared machine; the median ignores a round hit by other load.
        ratio = float(np.median(plain / hetcv))
        rate = {"hetcv": args.images / np.median(hetcv), "plain": args.images / np.median(plain)}
        results.append(
            {
                "stage": stage,
                "arch": arch,
                "image_size": args.image_size,
                "batch_size": args.batch_size if stage == "train" else EVAL_BATCH_SIZE,
                "images": args.images,
                "rounds": args.rounds,
                "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                "threads": torch.get_num_threads(),
                "hetcv_images_per_s": round(rate["hetcv"], 1),
                "plain_images_per_s": round(rate["plain"], 1),
                "ratio": round(ratio, 3),
                "gpu_peak_mib": peak[stage],
                "gpu_busy_fraction": round(busy[stage], 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        nargs="+",
        default=["resnet18"],
        help="architectures: torchvision names (resnet18, vgg16, densenet121 ...) or timm:<name>",
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024, help="images per epoch")
    parser.add_argument("--rounds", type=int, default=8, help="alternating timed epochs per side")
    parser.add_argument(
        "--busy-seconds", type=float, default=15, help="CUDA: seconds of hetcv-only work sampled"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the train rule's)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/train_speed.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for arch in args.arch:
        table = pd.DataFrame(measure(args, arch, device))
        print(table.to_string(index=False))
        for row in table.to_dict("records"):
            verdict = "meets" if row["ratio"] >= 0.95 else "MISSES"
            ratio = f"hetcv / plain = {row['ratio']:.3f} ({verdict} the 0.95 target)"
            print(f"{row['arch']} {row['stage']}: {ratio}")
        # Written model by model, so a time limit keeps what was measured.
        table.to_csv(args.out, mode="a", header=not args.out.exists(), index=False)


if __name__ == "__main__":
    main()
