#!/usr/bin/env bash
# Train a model; arguments after the defaults below override them (see `python train.py --help`).
#   bash scripts/train.sh                                  # tiny model on the built-in Bible pairs
#   bash scripts/train.sh --data_dir ../shared/data/qqp_small --dataset qqp --seq_len 64   # your own data
#   NPROC=4 bash scripts/train.sh --preset base --data_dir datasets/my_data --dataset my_data
#   bash scripts/train.sh --learned_mean_embed --denoise   # DiffuSeq-v2
# The built-in data (King James -> World English Bible) is built offline on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
case " $* " in
  *" --data_dir "*) ;;
  *) [ -f datasets/bible_kjv_web/train.jsonl ] || python -m diffuseq.data.bible --src kjv --trg web --out datasets/bible_kjv_web ;;
esac
launch train.py \
  --dataset bible_kjv_web --data_dir datasets/bible_kjv_web \
  --preset tiny --seq_len 128 --hidden_dim 128 \
  --bsz 64 --lr 1e-4 --learning_steps 2000 --warmup_steps 100 \
  --save_interval 500 --eval_interval 500 --log_interval 50 \
  --diffusion_steps 2000 --noise_schedule sqrt --schedule_sampler lossaware \
  "$@"
