#!/usr/bin/env bash
# One prepared GPU check: every part in one script that keeps going past a failed part and
# writes its results to OUT (parts.jsonl, env.json, *.log, train_*.json, decode_*.json,
# profile_*.txt, quality_scores.json, summary.md, summary.json, and the trained checkpoint when
# it is small).
#
#   bash bench/gpu_prepare.sh                 # once, on a CPU machine with the internet
#   bash bench/gpu_check.sh OUT               # on the GPU machine (about 7 minutes on one H200)
#   bash bench/gpu_check.sh OUT --cpu-smoke   # every part in a tiny size, on CPU (a test runs it)
#
# gpu_prepare.sh leaves .whl/ (wheels of the packages a bare GPU image lacks) and
# datasets/bible_kjv_web (the built-in data); both travel with the repository to the GPU machine.
# GPU time comes in short leases, so the parts run most important first and the script keeps to a
# deadline: GPU_CHECK_SECONDS (default 420) from its start, after which the parts left are
# skipped (recorded as such). GPU_CHECK_PARTS (a space-separated list of part names) runs only
# those parts, for a second call that picks up what the first skipped. QUALITY_BIG_MINUTES
# (default 5) and QUALITY_MINUTES (default 2) set the training times of the two quality parts.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash bench/gpu_check.sh OUT [--cpu-smoke]}
SMOKE=0
[ "${2:-}" = "--cpu-smoke" ] && SMOKE=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/parts.jsonl"
export PYTHONUNBUFFERED=1
# the interpreter of every part: PYTHON when set (a test sets its own), else python3
PY=${PYTHON:-python3}

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi

DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-420}))
PARTS=" ${GPU_CHECK_PARTS:-} "

part() {  # part NAME SECONDS COMMAND...: run, log to OUT/NAME.log, record the status, go on
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS status=ok left=$((DEADLINE - SECONDS - 15))  # 15 s kept for the summary
  if [ "$PARTS" != "  " ] && [[ "$PARTS" != *" $name "* ]]; then return; fi
  if [ $SMOKE = 0 ] && [ $left -lt 20 ]; then
    printf '{"part": "%s", "status": "skipped (deadline)", "seconds": 0}\n' "$name" >> "$OUT/parts.jsonl"
    echo "== $name: skipped (deadline)"
    return
  fi
  [ $SMOKE = 0 ] && [ $left -lt $limit ] && limit=$left
  echo "== $name ($limit s at most): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || status="failed (exit $?)"
  tail -n 25 "$OUT/$name.log"
  printf '{"part": "%s", "status": "%s", "seconds": %d}\n' "$name" "$status" $((SECONDS - t0)) >> "$OUT/parts.jsonl"
}

if [ $SMOKE = 1 ]; then
  DEV=cpu; PRESETS=tiny; PAIR=tiny; PAIR_BIG_FIRST=tiny; BIG_BSZ=8; BSZ=4; SEQ=32; REPS=1; DEC_BSZ=4; DEC_FIRST=tiny; DEC_REST=
  QUALITY_STEPS=20; QUALITY_MINUTES=0; MATMUL=256; EXAMPLES=8
  QB_MINUTES=0; QB_EVERY=10; QB_SHAPE="--width 32 --layers 1 --heads 2 --ffn 64 --bsz 8"
else
  DEV=cuda; PRESETS=tiny,small,base; PAIR=tiny,base; PAIR_BIG_FIRST=base,tiny; BIG_BSZ=512; BSZ=64; SEQ=128; REPS=10; DEC_BSZ=64,512; DEC_FIRST=base; DEC_REST=tiny
  QUALITY_STEPS=1000000; QUALITY_MINUTES=${QUALITY_MINUTES:-2}; MATMUL=8192; EXAMPLES=0
  QB_MINUTES=${QUALITY_BIG_MINUTES:-5}; QB_EVERY=1000; QB_SHAPE="--width 512 --layers 6 --heads 8 --ffn 2048 --bsz 256"
fi
PREC=$([ $DEV = cuda ] && echo bf16 || echo fp32)

# 1. the machine
part env 60 "$PY" bench/gpu_env.py --device $DEV --size $MATMUL --json "$OUT/env.json"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# 2. a model worth decoding: the default recipe at a larger size for QUALITY_BIG_MINUTES (5), its
#    decoding chosen on valid (tune_decode.py), the test split decoded with that choice and with the
#    paper's protocol (noise start, deterministic DPM-Solver++ 10), both scored next to copying
RUNB="$OUT/quality_big_run"
rm -rf "$RUNB"
part quality_big_train $((QB_MINUTES * 60 + 120)) bash scripts/run_default.sh --train-only \
  --checkpoint_path "$RUNB" $QB_SHAPE --learning_steps $QUALITY_STEPS --max_minutes $QB_MINUTES \
  --device $DEV --save_interval $QB_EVERY --eval_interval $QB_EVERY --keep_checkpoints 1 --progress false
part quality_big_tune 150 "$PY" tune_decode.py --model_dir "$RUNB" --device $DEV --bsz 512 \
  $([ "$EXAMPLES" -gt 0 ] && echo --max_examples $EXAMPLES)
for proto in chosen paper; do
  part "quality_big_$proto" 120 bash -c "$PY run_decode_solver.py --model_dir '$RUNB' --split test --bsz 512 \
    --device $DEV --out_dir '$OUT/quality_big_$proto' --progress false \
    $([ "$EXAMPLES" -gt 0 ] && echo --max_examples $EXAMPLES) \
    $([ $proto = paper ] && echo --init noise --absorb_rate 0 --step 10) \
    && $PY scripts/eval_seq2seq.py \"\$(ls $OUT/quality_big_$proto/*/*.jsonl | head -1)\" --baseline \
       --json '$OUT/quality_big_${proto}_scores.json'"
done
rm -rf "$RUNB"/ckpt_*   # too large to bring back: the figures are the record

# 3. training throughput: presets at seq_len 128 in bf16, with a profile of the first (the MFU target
#    is base's, whose profile comes from train_big_batch's first row)
part train_presets 150 "$PY" bench/bench_train.py --device $DEV --presets $PRESETS --precisions $PREC \
  --seq_len $SEQ --bsz $BSZ --repeats $REPS --no_baseline --profile "$OUT/profile_train_tiny.txt" \
  --json "$OUT/train_presets.json"

# 4. decoding throughput of base, eager: DPM-Solver++ K = 10, 20 and ancestral K = 100
for preset in $DEC_FIRST; do
  part "decode_${preset}_eager" 120 "$PY" bench/bench_decode.py --device $DEV --preset $preset \
    --precision $PREC --seq_len $SEQ --bszs $DEC_BSZ --dpm 10,20 --ancestral 100 --repeats 3 \
    --json "$OUT/decode_${preset}_eager.json"
done

# 5. a batch that fills the GPU, base first and profiled
part train_big_batch 120 "$PY" bench/bench_train.py --device $DEV --presets $PAIR_BIG_FIRST --precisions $PREC \
  --seq_len $SEQ --bsz $BIG_BSZ --repeats $REPS --no_baseline --profile "$OUT/profile_train_big.txt" \
  --json "$OUT/train_big_batch.json"

# 6. quality: the default recipe on the Bible data for a fixed time, decoded with the solver and the
#    decoding chosen on valid (as the default job does)
RUN="$OUT/quality_run"
rm -rf "$RUN"
part quality_train $((QUALITY_MINUTES * 60 + 90)) bash scripts/run_default.sh --train-only \
  --checkpoint_path "$RUN" --learning_steps $QUALITY_STEPS --max_minutes $QUALITY_MINUTES \
  --device $DEV --save_interval 100000 --progress false
part quality_tune 90 "$PY" tune_decode.py --model_dir "$RUN" --device $DEV --bsz 512 \
  $([ "$EXAMPLES" -gt 0 ] && echo --max_examples $EXAMPLES)
part quality_decode 90 "$PY" run_decode_solver.py --model_dir "$RUN" --split test --bsz 512 \
  --device $DEV --out_dir "$OUT/quality_outputs" --progress false \
  $([ "$EXAMPLES" -gt 0 ] && echo --max_examples $EXAMPLES)
part quality_score 60 bash -c "$PY scripts/eval_seq2seq.py \"\$(ls $OUT/quality_outputs/*/*.jsonl | head -1)\" \
  --baseline --json $OUT/quality_scores.json"
size=$(du -sm "$RUN" 2>/dev/null | cut -f1)
if [ -n "$size" ] && [ "$size" -ge 16 ]; then rm -rf "$RUN"/ckpt_*; fi   # keep a checkpoint only under 16 MB

# 7. the tests that need CUDA (they skip on CPU)
part gpu_tests 150 "$PY" -m pytest -q -m gpu tests/test_gpu.py

# 8. the rest: tiny decoding, then what torch.compile (CUDA graphs when decoding) buys, training
#    at the batch that fills the GPU
for preset in $DEC_REST; do
  part "decode_${preset}_eager" 120 "$PY" bench/bench_decode.py --device $DEV --preset $preset \
    --precision $PREC --seq_len $SEQ --bszs $DEC_BSZ --dpm 10,20 --ancestral 100 --repeats 3 \
    --json "$OUT/decode_${preset}_eager.json"
done
for preset in $DEC_FIRST $DEC_REST; do
  part "decode_${preset}_compiled" 200 "$PY" bench/bench_decode.py --device $DEV --preset $preset \
    --precision $PREC --seq_len $SEQ --bszs $DEC_BSZ --dpm 10,20 --ancestral 100 --repeats 3 --compile \
    --json "$OUT/decode_${preset}_compiled.json"
done
part train_compiled 240 "$PY" bench/bench_train.py --device $DEV --presets $PAIR_BIG_FIRST --precisions $PREC \
  --seq_len $SEQ --bsz $BIG_BSZ --repeats $REPS --warmup 3 --no_baseline --compile \
  --profile "$OUT/profile_train_compiled.txt" --json "$OUT/train_compiled.json"

# 9. one table
"$PY" bench/gpu_summary.py "$OUT"
