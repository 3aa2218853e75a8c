#!/usr/bin/env bash
# Train a model, on one process or several (NPROC, NNODES: see scripts/_launch.sh). With no
# recipe named, it trains the default one, bible-tiny (docs/recipes.md); flags override the recipe:
#   bash scripts/train.sh                                  # bible-tiny on the built-in Bible pairs
#   bash scripts/train.sh --recipe qqp-small               # a named recipe
#   bash scripts/train.sh --data_dir datasets/my_data --dataset my_data   # the default recipe, your data
#   NPROC=4 bash scripts/train.sh --recipe original-v2 --data_dir datasets/QQP --vocab_path bert/
# The built-in data (King James -> World English Bible) is built offline on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
a=" $* "
if [[ $a != *" --data_dir "* && ( $a != *" --recipe "* || $a == *" --recipe bible-tiny "* ) ]]; then
  [ -f datasets/bible_kjv_web/train.jsonl ] || "${PYTHON:-python}" -m diffuseq.data.bible --src kjv --trg web --out datasets/bible_kjv_web
fi
launch train.py "$@"
