"""Quality per unit of compute: train each recipe of diffuseq/recipes.py for the same number of steps
(same batch, so the same target tokens), decode a fixed slice with each decoder, score it next to
copying the source.

    python bench/bench_quality.py --data bible --recipes ladder-v2,ladder-seg --steps 3000   # train + score
    taskset -c 0 python bench/bench_quality.py --data bible --recipes ladder-seg --threads 1 &
    taskset -c 1 python bench/bench_quality.py --data bible --recipes ladder-seg-floor --threads 1 &
    python bench/bench_quality.py --data bible --report                          # the table

Each (data, recipe, steps) result is one JSON file under --out (bench/quality by default), so
recipes can run in separate processes, pinned one per core, and be reported together. Rows are
recipe x decoder; columns: steps, training minutes, target tokens seen, mean sentence BLEU, corpus
BLEU, ROUGE-L, average length; the copy-the-source line closes the table.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

from common import ROOT, table

from diffuseq import recipes as named
from diffuseq.logs import read_curves

import torch

# name -> keyword arguments of DiffuSeq.sample_ids
DECODERS = {
    "dpm10": dict(sampler="dpm", steps=10),
    "dpm10_clamp": dict(sampler="dpm", steps=10, clamping=True),
    "dpm10_start1998": dict(sampler="dpm", steps=10, t_start=1998),
    "dpm20": dict(sampler="dpm", steps=20),
    "dpm10_full": dict(sampler="dpm", steps=10, lengths="full"),
    "dpm10_margin0": dict(sampler="dpm", steps=10, length_margin=0),
    "dpm10_margin8": dict(sampler="dpm", steps=10, length_margin=8),
    "anc20": dict(sampler="ancestral", steps=20, clamping=False),
    "anc50": dict(sampler="ancestral", steps=50, clamping=False),
    "anc100": dict(sampler="ancestral", steps=100, clamping=False),
    "anc100_full": dict(sampler="ancestral", steps=100, clamping=False, lengths="full"),
    "anc100_clamp_last": dict(sampler="ancestral", steps=100, clamping=True, clamp_first=False),
    "anc100_clamp_all": dict(sampler="ancestral", steps=100, clamping=True),
    "anc100_large": dict(sampler="ancestral", steps=100, clamping=False, variance="large"),
    "anc100_clamp_all_large": dict(sampler="ancestral", steps=100, clamping=True, variance="large"),
}
DATA = {  # name -> (data folder, split scored, seq_len)
    "bible": ("datasets/bible_kjv_web", "test", 160),
    "iwslt": ("../shared/data/iwslt14_small", "valid", 128),
    "qqp": ("../shared/data/qqp_small", "valid", 64),
}


def ensure_data(name):
    folder = os.path.join(ROOT, DATA[name][0])
    if name == "bible" and not os.path.isfile(os.path.join(folder, "test.jsonl")):
        subprocess.run([sys.executable, "-m", "diffuseq.data.bible", "--src", "kjv", "--trg", "web",
                        "--out", folder], check=True, cwd=ROOT)
    if not os.path.isdir(folder):
        raise SystemExit(f"error: data folder {folder} does not exist")
    return folder


def train(data, recipe, steps, out, threads, seq_len, reuse=False, save_every=0):
    run = os.path.join(out, "runs", f"{data}_{recipe}_{steps}")
    given = ["--recipe", recipe, "--seq_len", str(seq_len)]
    if reuse and os.path.isdir(os.path.join(run, f"ckpt_{steps:07d}")):
        return run, logged_seconds(run), "(reused) " + " ".join(given)
    cmd = [sys.executable, "train.py", "--data_dir", ensure_data(data), "--dataset", data,
           "--checkpoint_path", run, "--learning_steps", str(steps), "--save_interval", str(save_every or steps),
           "--eval_interval", "0", "--log_interval", str(max(1, min(save_every or steps, steps // 10))),
           "--keep_checkpoints", "0" if save_every else "1",
           "--progress", "false", *given]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: training {recipe} failed:\n{r.stderr[-3000:]}")
    return run, time.time() - t0, " ".join(cmd[1:])


def logged_seconds(run, step=None):
    """Training time of a run (up to the record of `step`), from its curves.jsonl."""
    records = [r for r in read_curves(run) if "train" in r and (step is None or r["step"] <= step)]
    return records[-1]["elapsed"]


def target_tokens(run, steps):
    """Target tokens seen: the mean y length (with [SEP]) of the training split x batch x steps."""
    from diffuseq.config import load_args
    args = load_args(os.path.join(run, "args.json"))
    from diffuseq.data.dataset import load_split
    from diffuseq.tokenizer import Tokenizer
    tok = Tokenizer.load(os.path.join(run, "tokenizer.json"))
    ds, _ = load_split(args.data_dir, "train", tok, args.seq_len)
    import numpy as np
    n = float((np.asarray(ds["length"]) - np.asarray(ds["src_len"])).mean())  # y and its [SEP], no padding
    return n * args.bsz * steps


def score(run, data, decoders, examples, seed=123, reuse=False):
    from diffuseq.decoding import decode_split, load_model
    from diffuseq.metrics import evaluate, load_outputs
    model = load_model(run, device="cpu")
    folder, split, _ = DATA[data]
    out = {}
    for name in decoders:
        kw = dict(DECODERS[name])
        sampler, steps = kw.pop("sampler"), kw.pop("steps")
        t0 = time.time()
        done = glob.glob(os.path.join(run, "decoded", name, "*", f"{split}.seed{seed}.step{steps}.jsonl"))
        if reuse and done:
            paths, secs = done, None
        else:
            paths, _ = decode_split(model, ensure_data(data), split, os.path.join(run, "decoded", name),
                                    sampler=sampler, steps=steps, seeds=[seed], bsz=100, progress=False,
                                    max_examples=examples, **kw)
            secs = time.time() - t0
        sources, refs, cands = load_outputs(paths[0])
        out[name] = dict(evaluate(cands, refs, mbr=False), decode_s=secs, path=paths[0])
        if "copy" not in out:
            out["copy"] = evaluate([[s] for s in sources], refs, mbr=False)
        print(f"  {name}: sentence BLEU {out[name]['sentence_bleu']:.2f}  ROUGE-L {out[name]['rouge_l']:.2f}"
              + (f"  ({secs:.0f} s)" if secs is not None else "  (reused)"), flush=True)
    return out


def report(out, data, markdown=False):
    files = sorted(glob.glob(os.path.join(out, f"{data}_*.json")))
    if not files:
        raise SystemExit(f"error: no results for {data} under {out}")
    rows, copy = [], None
    for f in files:
        r = json.load(open(f))
        for dec, s in r["scores"].items():
            if dec == "copy":
                copy = s
                continue
            rows.append([r["recipe"], dec, r["steps"], r["train_min"], r.get("target_tokens"),
                         s["sentence_bleu"], s["bleu"], s["rouge_l"], s["avg_len"]])
    rows.sort(key=lambda x: (x[2], -x[5]))
    if copy:
        rows.append(["copy the source", "", None, None, None, copy["sentence_bleu"], copy["bleu"],
                     copy["rouge_l"], copy["avg_len"]])
    header = ["recipe", "decoder", "steps", "train min", "target tokens", "sent BLEU", "corpus BLEU",
              "ROUGE-L", "avg len"]
    if not markdown:
        return table(header, rows)
    fmt = lambda c: "" if c is None else (f"{c:,.0f}" if isinstance(c, float) and c > 1000 else  # noqa: E731
                                          f"{c:.2f}" if isinstance(c, float) else str(c))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DATA), default="bible")
    p.add_argument("--recipes", default="ladder-v2,ladder-seg-floor-len-m8",
                   help="comma-separated names of diffuseq/recipes.py (python -m diffuseq.recipes lists them)")
    p.add_argument("--decoders", default="dpm10", help="comma-separated: " + ", ".join(DECODERS))
    p.add_argument("--steps", type=int, default=3000, help="training steps of every recipe (batch 32)")
    p.add_argument("--examples", type=int, default=500, help="inputs decoded and scored (the first N of the split)")
    p.add_argument("--seq_len", type=int, default=None, help="default: per data set (bible 160, iwslt 128, qqp 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of training and decoding")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "quality"))
    p.add_argument("--report", action="store_true", help="only print the table of the results under --out")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a finished run and decoded files under --out instead of redoing them")
    p.add_argument("--markdown", action="store_true", help="print the report as a markdown table")
    p.add_argument("--quick", action="store_true", help="CI size: 30 steps, 20 examples")
    p.add_argument("--json", default=None, help="also write every record of this call to this file")
    p.add_argument("--save_every", type=int, default=0,
                   help="keep a checkpoint every N steps and score each with the first decoder: the "
                        "learning curve (steps, minutes, scores)")
    a = p.parse_args(argv)
    if a.report:
        print(report(a.out, a.data, a.markdown))
        return 0
    if a.quick:
        a.steps, a.examples = 30, 20
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = a.threads or torch.get_num_threads()
    seq_len = a.seq_len or DATA[a.data][2]
    recipes, decoders = a.recipes.split(","), a.decoders.split(",")
    for name in recipes + decoders:
        if name not in named.RECIPES and name not in DECODERS:
            raise SystemExit(f"error: unknown recipe or decoder {name!r}")
    os.makedirs(a.out, exist_ok=True)
    records = []
    for recipe in recipes:
        print(f"{a.data} / {recipe}: training {a.steps} steps", flush=True)
        run, secs, cmd = train(a.data, recipe, a.steps, a.out, threads, seq_len, a.reuse, a.save_every)
        scores = score(run, a.data, decoders, a.examples, reuse=a.reuse)
        curve = []
        if a.save_every:
            from diffuseq.checkpoint import list_checkpoints, step_of
            for c in list_checkpoints(run):
                step = step_of(c)
                s = score(c, a.data, decoders[:1], a.examples, reuse=a.reuse)[decoders[0]]
                curve.append(dict(step=step, train_min=logged_seconds(run, step) / 60, **{
                    k: s[k] for k in ("sentence_bleu", "bleu", "rouge_l", "avg_len")}))
        record = dict(data=a.data, recipe=recipe, flags=dict(named.get(recipe).args, seq_len=seq_len),
                      steps=a.steps, train_min=secs / 60, threads=threads, command=cmd,
                      target_tokens=target_tokens(run, a.steps), examples=a.examples, scores=scores,
                      curve=curve)
        path = os.path.join(a.out, f"{a.data}_{recipe}_{a.steps}.json")
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
        records.append(record)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"benchmark": "bench_quality", "results": records}, f, indent=2)
    print(report(a.out, a.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
