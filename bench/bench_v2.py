"""DiffuSeq v1 against DiffuSeq-v2 on the same code: two tiny models trained on qqp_small with equal
steps and settings but v2's (the original-v1 and original-v2 recipes at a tiny size, with this
benchmark's batch, rate and EMA), their training loss at equal steps, then decoding speed and BLEU
of the first N valid inputs with DPM-Solver++ and the ancestral sampler, against the copy-the-
source baseline.

    python bench/bench_v2.py                 # trains both through train.py, then decodes
    python bench/bench_v2.py --quick         # a handful of steps and inputs (CI)
"""
import argparse
import os
import subprocess
import sys
import time

import torch

import common
from common import header_lines, table, write_json
from diffuseq.data.dataset import read_pairs
from diffuseq.decoding import load_model
from diffuseq.logs import read_curves
from diffuseq.metrics import corpus_bleu, sentence_bleu_avg

VARIANTS = {"v1": "original-v1", "v2": "original-v2"}  # the recipes, at this benchmark's size


def train(variant, a, run_dir):
    """Train one variant through train.py; returns (last logged step, its loss terms, steps/s)."""
    cmd = [sys.executable, os.path.join(common.ROOT, "train.py"), "--recipe", VARIANTS[variant],
           "--dataset", "qqp_small", "--data_dir", a.data_dir, "--checkpoint_path", run_dir, "--preset", "tiny",
           "--vocab", "own", "--seq_len", str(a.seq_len), "--vocab_size", str(a.vocab_size), "--bsz", str(a.bsz),
           "--microbatch", str(a.bsz), "--lr", str(a.lr), "--warmup_steps", str(max(1, a.steps // 10)),
           "--learning_steps", str(a.steps), "--ema_rate", str(a.ema_rate),
           "--log_interval", str(max(1, a.steps // 10)), "--eval_interval", "0",
           "--save_interval", str(a.steps), "--keep_checkpoints", "1", "--precision", "fp32",
           "--seed", str(a.seed), "--progress", "false", "--device", a.device]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"training {variant} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return last_record(run_dir), time.time() - t0, " ".join(cmd[1:])


def last_record(run_dir):
    """(step, loss terms, steps/s) of the run's last training record in curves.jsonl."""
    train = [r for r in read_curves(run_dir) if "train" in r]
    if not train:
        raise RuntimeError(f"{run_dir}: no training record in curves.jsonl")
    r = train[-1]
    return r["step"], r["train"], r["steps_per_s"]


def decode(model, pairs, sampler, steps, bsz, seed):
    """Generate for every pair; returns (texts, sentences/s)."""
    out, t0 = [], time.perf_counter()
    for start in range(0, len(pairs), bsz):
        chunk = pairs[start:start + bsz]
        ids, mask = model.inputs([p[0] for p in chunk], [p[1] for p in chunk])
        gen = model.sample_ids(ids, mask, sampler, steps, seed=seed + start)
        out += model.detokenize(gen, mask)
    return out, len(pairs) / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=os.path.join(os.path.dirname(common.ROOT), "shared", "data", "qqp_small"))
    p.add_argument("--out", default=os.path.join(common.ROOT, "bench", "results", "v2_runs"),
                   help="where the two runs are trained")
    p.add_argument("--steps", type=int, default=300, help="training steps of each model")
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--bsz", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema_rate", type=float, default=0.99, help="short runs need a short average")
    p.add_argument("--vocab_size", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=100, help="decode the first N valid inputs")
    p.add_argument("--dpm_steps", default="10,20")
    p.add_argument("--ancestral_steps", type=int, default=2000, help="0: skip the ancestral sampler")
    p.add_argument("--n_ancestral", type=int, default=None,
                   help="inputs for the ancestral sampler (default: --n); it costs K model calls")
    p.add_argument("--decode_v1", action="store_true", help="decode the v1 model as well")
    p.add_argument("--decode_bsz", type=int, default=100)
    p.add_argument("--reuse", action="store_true", help="reuse trained runs in --out if present")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a handful of steps and inputs (CI)")
    p.add_argument("--json", default=None, help="default bench/results/bench_v2.json")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.n, a.ancestral_steps, a.n_ancestral, a.dpm_steps = 4, 4, 20, 4, "2"
        a.seq_len, a.bsz, a.vocab_size, a.decode_v1 = 32, 8, 1000, True
        if a.out == p.get_default("out"):
            a.out = os.path.join(common.ROOT, "bench", "results", "v2_runs_quick")
    if not os.path.isfile(os.path.join(a.data_dir, "train.jsonl")):
        print(f"bench_v2 skipped: no qqp data at {a.data_dir}")
        return 0
    device = torch.device(a.device)
    n_anc = a.n_ancestral or a.n

    train_rows, record = [], {"steps": a.steps, "seq_len": a.seq_len, "bsz": a.bsz, "lr": a.lr,
                              "n": a.n, "n_ancestral": n_anc, "train": {}, "decode": []}
    runs = {}
    for v in VARIANTS:
        run_dir = os.path.join(a.out, v)
        if a.reuse and os.path.isfile(os.path.join(run_dir, "curves.jsonl")):
            last, wall, cmd = last_record(run_dir), None, "(reused)"
        else:
            (last), wall, cmd = train(v, a, run_dir)
        runs[v] = run_dir
        step, terms, rate = last
        train_rows.append([v, step, terms["mse"], terms["loss"], terms.get("acc"), rate, wall])
        record["train"][v] = dict(step=step, terms=terms, steps_per_s=rate, wall_s=wall, command=cmd)

    pairs = list(read_pairs(os.path.join(a.data_dir, "valid.jsonl")))[:a.n]
    dec_rows = []
    for v in (["v1", "v2"] if a.decode_v1 else ["v2"]):
        model = load_model(runs[v], device=a.device)
        tok = model.tokenizer
        norm = lambda xs: tok.decode_batch(tok.encode_batch(xs))  # noqa: E731  as decode_split does
        srcs, refs = norm([q[0] for q in pairs]), norm([q[1] for q in pairs])
        if not dec_rows:
            dec_rows.append(["copy source", "-", len(pairs), None, corpus_bleu(srcs, refs),
                             sentence_bleu_avg(srcs, refs)])
        plan = [("dpm", int(k), len(pairs)) for k in a.dpm_steps.split(",")]
        if a.ancestral_steps:
            plan.append(("ancestral", a.ancestral_steps, n_anc))
        for sampler, k, n in plan:
            hyps, rate = decode(model, pairs[:n], sampler, k, a.decode_bsz, a.seed)
            name = f"{v} {'DPM-Solver++' if sampler == 'dpm' else 'ancestral'} K={k}"
            cb, sb = corpus_bleu(hyps, refs[:n]), sentence_bleu_avg(hyps, refs[:n])
            copy_sb = sentence_bleu_avg(srcs[:n], refs[:n])
            dec_rows.append([name, v, n, rate, cb, sb])
            record["decode"].append(dict(variant=v, sampler=sampler, steps=k, n=n, sent_s=rate,
                                         corpus_bleu=cb, sentence_bleu=sb, copy_sentence_bleu_same_n=copy_sb,
                                         examples=hyps[:3]))
    print(header_lines("bench_v2", device, f"qqp_small, tiny, seq_len {a.seq_len}, batch {a.bsz}, "
                       f"lr {a.lr}, {a.steps} steps each"))
    print(table(["variant", "step", "mse", "loss", "acc", "steps/s", "train wall s"], train_rows))
    print()
    print(table(["decoding", "model", "inputs", "sent/s", "corpus BLEU", "mean sent BLEU"], dec_rows))
    record["copy_source"] = dict(corpus_bleu=dec_rows[0][4], sentence_bleu=dec_rows[0][5])
    path = write_json(a.json, "bench_v2", device, record)
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
