#!/usr/bin/env bash
# Filter-stage throughput on a CUDA machine: ViT-B-32 (random weights: no downloads needed),
# fp16 and bf16 autocast, several batch sizes, JPEGs decoded in the DataLoader workers (pil) or
# by nvJPEG on the GPU (torch); prints model-alone and end-to-end images/s.
# Goal: >= 10,000 img/s end to end on one H100/H200. Alongside, nvidia-smi samples GPU
# utilisation every second into $OUT_DIR/gpu_util.csv (default /tmp).
#
#   bash bench/filter_gpu.sh            # N=20000 images, workers = CPU cores
#   N=50000 WORKERS=24 bash bench/filter_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
N="${N:-20000}"
WORKERS="${WORKERS:-$(nproc)}"
BATCH_SIZES="${BATCH_SIZES:-256 512 1024}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "filter_gpu.sh: no CUDA device visible to torch (torch.cuda.is_available() is False);" \
         "run it on a GPU machine, or use bench/filter_bench.py --device cpu here." >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export HF_HUB_OFFLINE=1
OUT_DIR="${OUT_DIR:-/tmp}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$OUT_DIR/gpu_util.csv" &
    SMI=$!
    trap 'kill $SMI 2>/dev/null' EXIT
fi

# shellcheck disable=SC2086
"$PY" bench/filter_bench.py --device cuda --models ViT-B-32 --n "$N" --parts "${PARTS:-10}" --workers "$WORKERS" \
    --precisions fp16 bf16 --batch-sizes $BATCH_SIZES --decoders pil torch
