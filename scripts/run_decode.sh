#!/usr/bin/env bash
# Decode with ancestral sampling:  bash scripts/run_decode.sh MODEL_DIR [--step 50] [--split test] ...
#   MODEL_DIR is a checkpoint folder or a run folder (its best checkpoint by validation loss, else its latest).
#   NPROC=2 shards the inputs over two processes; see `python run_decode.py --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
[ $# -ge 1 ] || { echo "usage: bash scripts/run_decode.sh MODEL_DIR [run_decode.py arguments]" >&2; exit 2; }
model_dir=$1; shift
launch run_decode.py --model_dir "$model_dir" --split test --bsz 64 --seed 123 \
  --out_dir generation_outputs "$@"
