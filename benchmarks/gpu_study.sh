#!/usr/bin/env bash
# Issues 18 and 31 in one command on a CUDA machine: benchmarks/gpu_check.sh, then a
# paper-shaped study (config/paper.yaml's shape: ResNet18 on 2,928 and VGG16 on 5,674 synthetic
# grey 224-px images, sample sizes 100/300/half/all and 300/700/half/all, 4 folds, the full
# clustering block; plus, unless GPU_STUDY_DENSENET=0, the 2,928 PSP images with DenseNet121)
# run by Snakemake from scratch, timed, with the GPU sampled by nvidia-smi once a second.
#
# Steps: (a) install the wheels carried in .whl/ (Snakemake 9.27.1, scikit-fuzzy 0.5.0 and what
# they need that the machine lacks) into /tmp/site; (b) gpu_check.sh into OUTDIR; (c) synthetic
# PNGs and a labels CSV per dataset under $GPU_STUDY_ROOT (default /tmp/gpu_study), written in
# parallel; (d) the study file $GPU_STUDY_ROOT/study.yaml (benchmarks/gpu_study_config.py:
# paper.yaml with the synthetic sources, pretrained: none, epochs $GPU_STUDY_EPOCHS, default 8);
# (e) `python -m snakemake` in $GPU_STUDY_ROOT/run (a working directory linking the project's
# files), under a time limit that ends the script by $GPU_STUDY_DEADLINE s (default 560);
# (f) the timing files into OUTDIR (7 files at most):
#   gpu_study.log      everything this script printed, except Snakemake's own output
#   snakemake.log      Snakemake's output (failed jobs' logs included)
#   gpu_check.csv      gpu_check.sh's figures (CUDA only)
#   study_timing.md    wall time, training phase, GPU busy fraction and peak memory, and per
#                      rule: jobs, summed/longest wall time, CPU time, peak RSS
#   study_history.csv  every train job's epochs (seconds, held-out scores)
#   study_gpu.csv      the nvidia-smi samples (seconds since the study started, util %, MiB)
#   study_summary.md   the study's results/summary.md, when it got that far
#
# Usage: bash benchmarks/gpu_study.sh [OUTDIR, default results/bench/gpu_study]
# Environment: PYTHON (default python3), GPU_STUDY_SCALE=full|tiny (tiny: a CPU smoke test at
# 64 px, 1 epoch, gpu_check skipped without CUDA), GPU_STUDY_EPOCHS, GPU_STUDY_ROOT,
# GPU_STUDY_CORES (default nproc), GPU_STUDY_WHEELS (a folder of wheels, default .whl; none to
# skip), GPU_STUDY_DEADLINE, GPU_STUDY_TIMEOUT (snakemake's limit, default 420 s at most),
# GPU_STUDY_ID_PREFIX (text before the bone-age ids; default none: numeric ids, as RSNA's),
# GPU_STUDY_DENSENET (default 1; 0 leaves out the DenseNet121 copy of the PSP study).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
script_start=$SECONDS

out="${1:-results/bench/gpu_study}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
scale="${GPU_STUDY_SCALE:-full}"
case "$scale" in
    full) default_epochs=8 ;;
    tiny) default_epochs=1 ;;
    *) echo "gpu_study: GPU_STUDY_SCALE must be full or tiny, not '$scale'" >&2; exit 2 ;;
esac
epochs="${GPU_STUDY_EPOCHS:-$default_epochs}"
root="${GPU_STUDY_ROOT:-/tmp/gpu_study}"
python="${PYTHON:-python3}"
cores="${GPU_STUDY_CORES:-$(nproc)}"
wheels="${GPU_STUDY_WHEELS:-.whl}"
deadline="${GPU_STUDY_DEADLINE:-560}"
max_timeout="${GPU_STUDY_TIMEOUT:-420}"
export PYTHONUNBUFFERED=1

rm -f "$out"/gpu_study.log "$out"/snakemake.log "$out"/study_*.md "$out"/study_*.csv
exec 3>&1 4>&2 > >(tee -a "$out/gpu_study.log") 2>&1
tee_pid=$!
sampler=""
finish() {
    local rc=$?
    [[ -n "$sampler" ]] && kill "$sampler" 2>/dev/null
    exec 1>&3 2>&4
    wait "$tee_pid" 2>/dev/null || true
    return "$rc"
}
trap finish EXIT
echo "gpu_study: scale $scale, $epochs epoch(s), $cores cores, data and run under $root, figures to $out"

# (a) The carried wheels. --no-deps: the set is complete by construction (see the report of
# the session that made it); what the machine already has (numpy, torch, pandas ...) is not
# in it. A requirement of a carried package that the machine's version misses is met from
# $wheels/compat when a wheel is there (typing_extensions >= 4.16, packaging < 26).
if [[ "$wheels" != none && -d "$wheels" ]] && compgen -G "$wheels/*.whl" >/dev/null; then
    echo "gpu_study: installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into /tmp/site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    unmet=$("$python" - "$wheels" <<'PY'
import sys
from importlib import metadata
from pathlib import Path
from packaging.requirements import Requirement
compat = {p.name.split("-")[0].lower().replace("_", "-") for p in Path(sys.argv[1], "compat").glob("*.whl")}
for dist in metadata.distributions(path=["/tmp/site"]):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            why = " (not needed with --scheduler greedy)" if req.name == "pulp" else ""
            print(f"gpu_study: missing {req.name}, needed by {dist.metadata['Name']}{why}", file=sys.stderr)
            continue
        if not req.specifier.contains(have, prereleases=True):
            name = req.name.lower().replace("_", "-")
            fix = "carried in compat" if name in compat else "no compat wheel"
            print(f"gpu_study: {dist.metadata['Name']} needs {req}, machine has {have} ({fix})", file=sys.stderr)
            if name in compat:
                print(name)
PY
    ) || unmet=""
    for name in $(echo "$unmet" | sort -u); do
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$wheels"/compat/"${name//-/_}"-*.whl
    done
fi
"$python" - <<'PY'
import importlib, platform
from importlib import metadata
print("gpu_study: Python", platform.python_version())
for name, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("snakemake", "snakemake"),
                   ("skfuzzy", "scikit-fuzzy"), ("numpy", "numpy"), ("pandas", "pandas"),
                   ("sklearn", "scikit-learn"), ("scipy", "scipy"), ("pyarrow", "pyarrow"),
                   ("matplotlib", "matplotlib"), ("seaborn", "seaborn"), ("PIL", "pillow"),
                   ("jsonschema", "jsonschema"), ("packaging", "packaging"),
                   ("typing_extensions", "typing_extensions")):
    try:
        module = importlib.import_module(name)
        print(f"  {dist} {metadata.version(dist)} ({module.__file__})")
    except Exception as error:
        print(f"  {dist}: NOT IMPORTABLE ({error})")
import torch
print("  CUDA:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
PY
if "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then cuda=1; else cuda=0; fi
if [[ $cuda == 0 && $scale == full && "${GPU_STUDY_ALLOW_CPU:-0}" != 1 ]]; then
    echo "gpu_study: torch sees no CUDA device; the full study needs a GPU (GPU_STUDY_SCALE=tiny for a CPU smoke test)" >&2
    exit 1
fi

# (b) gpu_check.sh: one fold of the paper's shape, hetcv against plain PyTorch.
if [[ $cuda == 1 ]]; then
    check_rc=0
    PYTHON="$python" bash benchmarks/gpu_check.sh "$out" || check_rc=$?
    [[ $check_rc == 0 ]] || echo "gpu_study: gpu_check.sh FAILED (exit $check_rc); going on with the study"
else
    echo "gpu_study: no CUDA: gpu_check.sh skipped"
fi

# (c, d) Synthetic images and the study file.
rm -rf "$root"
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$python" benchmarks/gpu_study_config.py make \
    --root "$root" --scale "$scale" --epochs "$epochs" --workers "$cores" \
    --id-prefix "${GPU_STUDY_ID_PREFIX:-}" $([[ "${GPU_STUDY_DENSENET:-1}" == 0 ]] && echo --no-densenet)
work="$root/run"
mkdir -p "$work"
for entry in workflow config profiles src; do ln -s "$repo/$entry" "$work/$entry"; done
# hetcv itself, for Snakemake and its jobs (the GPU machine has no index to install it from).
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"

# (e) The study, timed, with the GPU sampled once a second.
smi="$root/nvidia_smi.csv"
if [[ $cuda == 1 ]] && command -v nvidia-smi >/dev/null; then
    (
        while :; do
            sample=$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1 || true)
            [[ -n "$sample" ]] && echo "$(date +%s.%N),$sample" >>"$smi"
            sleep 1
        done
    ) &
    sampler=$!
fi
stop_sampler() { [[ -n "$sampler" ]] && kill "$sampler" 2>/dev/null; sampler=""; return 0; }

limit=$((deadline - (SECONDS - script_start) - 30))
((limit > max_timeout)) && limit=$max_timeout
if ((limit < 60)); then
    echo "gpu_study: only $limit s left before the $deadline s deadline: study not started" >&2
    exit 1
fi
echo "gpu_study: snakemake --cores $cores, limit $limit s"
started=$(date +%s.%N)
study_rc=0
# --scheduler greedy: the ILP scheduler's pulp (16 MB of solver binaries) is not carried.
# gpu=$cores and 2 threads per train job: at most 8 train jobs share the GPU (88 GiB at peak).
(cd "$work" && timeout -k 20 "$limit" "$python" -m snakemake --cores "$cores" \
    --configfile "$root/study.yaml" --scheduler greedy --resources gpu="$cores" --keep-going \
    --set-threads train=2 \
    >"$out/snakemake.log" 2>&1) || study_rc=$?
wall=$("$python" -c "import time; print(round(time.time() - $started, 1))")
stop_sampler
echo "gpu_study: snakemake exit $study_rc after $wall s; its output is in $out/snakemake.log:"
{ grep -E "^(Error in rule|WorkflowError|Exiting|MissingOutput)|[a-zA-Z]Error: " "$out/snakemake.log" \
    | tail -n 12; grep -E "steps \(" "$out/snakemake.log" | tail -n 1; } || true

# (f) The timing files.
if [[ -s "$smi" ]]; then
    awk -F, -v t0="$started" 'BEGIN {print "seconds,util_percent,memory_mib"} {printf "%.1f,%s,%s\n", $1 - t0, $2, $3}' \
        "$smi" | tr -d ' ' >"$out/study_gpu.csv"
fi
"$python" benchmarks/gpu_study_config.py report --workdir "$work" --out "$out" --wall "$wall" \
    --rc "$study_rc" --started "$started" --smi "$smi" --scale "$scale"
[[ -f "$work/results/summary.md" ]] && cp "$work/results/summary.md" "$out/study_summary.md"
echo "gpu_study: done in $((SECONDS - script_start)) s; files in $out:"
ls -l "$out"
exit "$study_rc"
