#!/usr/bin/env bash
# Train a model; arguments after the defaults below override them (see `python train.py --help`).
#   bash scripts/train.sh                                  # tiny model on ../shared/data/qqp_small
#   NPROC=4 bash scripts/train.sh --preset base --data_dir datasets/my_data --dataset my_data
#   bash scripts/train.sh --learned_mean_embed --denoise   # DiffuSeq-v2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
launch train.py \
  --dataset qqp --data_dir ../shared/data/qqp_small \
  --preset tiny --seq_len 128 --hidden_dim 128 \
  --bsz 64 --lr 1e-4 --learning_steps 2000 --warmup_steps 100 \
  --save_interval 500 --eval_interval 500 --log_interval 50 \
  --diffusion_steps 2000 --noise_schedule sqrt --schedule_sampler lossaware \
  "$@"
