#!/usr/bin/env bash
# The built-in default, end to end on CPU (about 13 minutes on an idle 2-core CPU; bench/default_job/ records it):
#   1. build King James -> World English Bible verse pairs from the installed pythonbible packages,
#   2. train the default recipe, bible-tiny, for STEPS steps: DiffuSeq-v2 (soft absorbing state +
#      discrete noise) with positions counted per segment, a 16-dimensional embedding space, a
#      noise floor, a length head and a constant learning rate (docs/recipes.md says why),
#   3. choose the decoding on TUNE_EXAMPLES valid verses (tune_decode.py, GRID grid; it writes
#      decoding.json beside the weights of the checkpoint with the lowest validation loss),
#   4. decode the test split with DPM-Solver++ and that choice, and score it next to the
#      copy-the-source baseline.
# Environment: STEPS (default 3000), OUT (run folder, default diffusion_models/default_bible),
# TUNE_EXAMPLES (default 200), GRID (quick or full, default quick), MAX_EXAMPLES (test inputs to
# decode, default all).
# With --train-only, only steps 1-2 run, and the arguments after it go to train.py (the GPU check
# uses this to train the same recipe for a fixed time).
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_ONLY=0
if [ "${1:-}" = "--train-only" ]; then TRAIN_ONLY=1; shift; fi
STEPS=${STEPS:-3000}
TUNE_EXAMPLES=${TUNE_EXAMPLES:-200}
GRID=${GRID:-quick}
OUT=${OUT:-diffusion_models/default_bible}
DATA=datasets/bible_kjv_web

[ -f "$DATA/test.jsonl" ] || "${PYTHON:-python}" -m diffuseq.data.bible --src kjv --trg web --out "$DATA"

"${PYTHON:-python}" train.py --recipe bible-tiny --checkpoint_path "$OUT" --learning_steps "$STEPS" --keep_checkpoints 1 "$@"
[ $TRAIN_ONLY = 1 ] && exit 0

# 3. choose the decoding on 200 valid verses (decoding.json beside the weights), decode the test split
"${PYTHON:-python}" tune_decode.py --model_dir "$OUT" --max_examples "$TUNE_EXAMPLES" --grid "$GRID"
"${PYTHON:-python}" run_decode_solver.py --model_dir "$OUT" --split test --bsz 100 --out_dir generation_outputs \
  --progress false ${MAX_EXAMPLES:+--max_examples "$MAX_EXAMPLES"} | tee "$OUT/decode.log"
result=$(sed -n 's/^wrote //p' "$OUT/decode.log")
scores="${result%.jsonl}.scores.json"
"${PYTHON:-python}" scripts/eval_seq2seq.py "$result" --baseline --json "$scores"
"${PYTHON:-python}" - "$scores" "$result" "$OUT/decode.log" "$OUT" <<'PY'
import glob, json, os, sys
s = json.load(open(sys.argv[1]))
saved = sorted(glob.glob(os.path.join(sys.argv[4], "ckpt_*", "args.json")))
family = json.load(open(saved[-1])).get("family", "gaussian") if saved else "gaussian"
how = next((line.split("decoding with ", 1)[1].split(" (")[0] for line in open(sys.argv[3])
            if line.startswith("decoding with ")), "the saved choice")
model, base = s["model"], s["copy source"]
gap = model["sentence_bleu"] - base["sentence_bleu"]
rows = [json.loads(line) for _, line in zip(range(5), open(sys.argv[2]))]
print("\nfirst test verses:")
for r in rows:
    print(f"  source:    {r['source']}\n  reference: {r['reference']}\n  model:     {r['recover']}\n")
print(f"model ({family} family; {how}): mean sentence BLEU {model['sentence_bleu']:.1f}, ROUGE-L {model['rouge_l']:.1f}; "
      f"copying the source: {base['sentence_bleu']:.1f}, {base['rouge_l']:.1f} "
      f"({'above' if gap > 0 else 'below'} it by {abs(gap):.1f} BLEU).")
if gap <= 0:
    print("The model rewrites verses, but these CPU minutes leave it below copying the source, which "
          "already shares most words with the modern text. Train longer (STEPS=20000) or on a GPU.")
PY
echo "outputs: $result"
echo "scores:  $scores"
echo "curves:  $OUT/loss.png"
