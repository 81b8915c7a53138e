#!/usr/bin/env bash
# One command that validates PILA's GPU path on a single fresh GPU machine in under 9 minutes:
#
#     bash scripts/gpu_check.sh OUTDIR                 # GPU: writes OUTDIR/summary.md and OUTDIR/summary.json
#     bash scripts/gpu_check.sh --cpu-smoke OUTDIR     # the same sequence at toy sizes on a CPU (in the test suite)
#
# In order, each section time-boxed and the summary rewritten after each one (a cut-off keeps the earlier results):
#   a) bf16 training step of stages A, B, C at 81x480x832 on the Wan 2.1 1.3B architecture (random weights):
#      step time, peak memory, the backbone's share, beside the planning figures of `python -m training.bench`
#   b) `python -m pila.bench` in bf16 at full size: adapter ms per call (k = 0, 1, 4, 8) vs one Wan 1.3B forward (B = 2)
#   c) `torchrun` on one GPU (NCCL): an unbroken run vs a run SIGKILLed at a chosen step and resumed (bitwise equal?)
#   d) FSDP2 (fully_shard) on one GPU
#   cache) seconds per clip for caching: the real-size Wan VAE + UMT5-XXL architectures (random weights)
#   e) the physics world's one-call `gpu` config (training/configs/physworld_gpu.json, when present), resumable:
#      run the check again with the same OUTDIR to continue it
# Logs: OUTDIR/logs/<section>.log. Exit status 0 when every section passed (or was skipped).
#
# Offline machines (no internet; e.g. torch 2.11 + CUDA, Python 3.12, no diffusers or kornia): the packages travel
# with the working tree as wheels in `.whl/` (git-ignored). Make them where there is internet and this project is
# installed:
#
#     bash scripts/gpu_wheels.sh    # the installed closure of diffusers, transformers, kornia, sentencepiece, einops,
#                                   # safetensors, tqdm (pinned; no torch, no numpy), cp312 manylinux wheels, ~51 MB
#
# and this script installs them (when an import is missing) with
#     pip install --no-index --no-deps --target .pylib .whl/*.whl
# onto PYTHONPATH, so the machine's own torch and numpy are kept. OpenCV (WITH_OPENCV=1, ~50 MB) is only needed for
# the flow timing of the cache section.
set -euo pipefail

smoke=()
if [[ "${1:-}" == "--cpu-smoke" ]]; then
    smoke=(--cpu-smoke)
    shift
fi
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/gpu_check.sh [--cpu-smoke] OUTDIR [--only a,b,...]" >&2
    exit 2
fi
out="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"

if [[ -d .whl ]] && ! "$py" -c "import diffusers, transformers, kornia" 2>/dev/null; then
    if [[ ! -d .pylib ]]; then
        echo "gpu_check: installing the wheels in .whl/ into .pylib (offline, no dependencies resolved)" >&2
        "$py" -m pip install --quiet --no-index --no-deps --target .pylib .whl/*.whl
    fi
fi
if [[ -d .pylib ]]; then
    export PYTHONPATH="$root/.pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$py" scripts/gpu_check.py --out "$out" "${smoke[@]}" "$@"
