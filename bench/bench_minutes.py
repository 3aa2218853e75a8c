"""Held-out scores of every checkpoint of a run against its training minutes: the curve of
docs/quality.md's plot. Each checkpoint decodes the held-out pairs of bench/splits.py once with
one setting (given, or the decoding a bench_heldout.py record chose on the choose pairs), so the
curve shows what more minutes buy at fixed decoding.

    python bench/bench_minutes.py --run RUN --data bible --name bible_masked \\
        --settings '{"sampler": "topk", "steps": 10}' --threads 1
    python bench/plot_minutes.py          # docs/quality_minutes.png from every minutes_* record

A checkpoint's minutes are those of its step in the run's curves.jsonl (training time, without
validation and saving). The record is bench/quality/minutes_<name>.json.
"""
import argparse
import json
import os
import sys
import time

from common import ROOT, header_lines, write_json
from splits import SPLITS, load_split_pairs, score

import torch

from diffuseq import checkpoint as ckpt
from diffuseq.choice import describe
from diffuseq.decoding import load_model
from diffuseq.logs import read_curves


def minutes_at(run, step):
    """The training minutes of `step` in the run's curves.jsonl (the first record at or past it)."""
    for r in read_curves(run):
        if "elapsed" in r and r.get("step", -1) >= step:
            return round(r["elapsed"] / 60, 2)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder (every checkpoint in it is scored)")
    p.add_argument("--data", choices=sorted(SPLITS), required=True)
    p.add_argument("--settings", default=None, help="decoding settings as JSON (default: --from_record's 'best')")
    p.add_argument("--from_record", default=None, help="a bench_heldout.py record whose chosen settings to use")
    p.add_argument("--max_examples", type=int, default=None)
    p.add_argument("--bsz", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", required=True)
    p.add_argument("--weights", choices=["ema", "model"], default=None,
                   help="default: those --from_record decoded with, else ema")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    weights = a.weights or "ema"
    if a.settings:
        settings = json.loads(a.settings)
    elif a.from_record:
        with open(a.from_record) as f:
            rec = json.load(f)
        settings = rec["rows"]["best"]["settings"]
        weights = a.weights or rec.get("weights", "ema")
    else:
        p.error("give --settings or --from_record")
    held = load_split_pairs(a.data, "test")[:a.max_examples]
    head = header_lines("bench_minutes", torch.device("cpu"), f"{a.run}, {describe(settings)}, {len(held)} held-out")
    print(head, flush=True)
    points = []
    for path in ckpt.list_checkpoints(a.run):
        model = load_model(path, "cpu", use_ema=weights == "ema")
        step = int(os.path.basename(path).split("_")[1])
        t0 = time.time()
        out = model.generate([s for s, _ in held], seed=0, bsz=a.bsz, use_saved=False, **settings)
        s = score(out, held)
        points.append(dict(checkpoint=os.path.basename(path), step=step, minutes=minutes_at(a.run, step),
                           decode_seconds=round(time.time() - t0, 1),
                           **{k: round(s[k], 2) for k in ("sentence_bleu", "bleu", "rouge_l", "avg_len")}))
        print(f"{points[-1]['checkpoint']}  {points[-1]['minutes']} min  sentence BLEU {s['sentence_bleu']:.2f}  "
              f"ROUGE-L {s['rouge_l']:.2f}", flush=True)
    args = load_model(ckpt.list_checkpoints(a.run)[-1], "cpu").args.to_dict() if points else {}
    path = os.path.join(ROOT, "bench", "quality", f"minutes_{a.name}.json")
    write_json(path, "bench_minutes", torch.device("cpu"), dict(
        header=head, command=" ".join(["python"] + sys.argv), run=a.run, data=a.data, recipe=args.get("recipe"),
        family=args.get("family", "gaussian"), weights=weights, settings=settings, decoder=describe(settings), held_out=len(held),
        points=points))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
