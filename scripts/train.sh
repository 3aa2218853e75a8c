#!/usr/bin/env bash
# Train a model with the default recipe (the README's Quality section: DiffuSeq-v2 with positions
# per segment, a 16-dimensional embedding space, a noise floor and a length head); arguments after
# the defaults below override them (see `python train.py --help`), e.g. the original DiffuSeq:
#   bash scripts/train.sh --learned_mean_embed false --denoise false --segment_positions false \
#     --t_min 0 --length_head false --hidden_dim 128
#   bash scripts/train.sh                                  # tiny model on the built-in Bible pairs
#   bash scripts/train.sh --data_dir ../shared/data/qqp_small --dataset qqp --seq_len 64   # your own data
#   NPROC=4 bash scripts/train.sh --preset base --data_dir datasets/my_data --dataset my_data
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
  --preset tiny --width 128 --layers 2 --heads 4 --ffn 512 --hidden_dim 16 \
  --seq_len 160 --vocab_size 4000 \
  --learned_mean_embed true --denoise true --segment_positions true --t_min 600 --length_head true \
  --bsz 32 --lr 1e-3 --lr_schedule constant --warmup_steps 50 --learning_steps 20000 --ema_rate 0.99 --dropout 0.0 \
  --diffusion_steps 2000 --noise_schedule sqrt --schedule_sampler uniform \
  --save_interval 2000 --eval_interval 2000 --log_interval 100 \
  "$@"
