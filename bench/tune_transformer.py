"""Tune the Transformer baseline's learning rate and dropout: train bench/baseline_transformer.py
once per (lr, dropout) of a grid, for the same minutes on one thread, decode the choose pairs of
bench/splits.py greedily, and keep the setting of the best sentence BLEU. The held-out pairs are
not looked at: the command printed at the end trains the winner and scores them.

    taskset -c 0 python bench/tune_transformer.py --data qqp --minutes 10
    taskset -c 0 python bench/tune_transformer.py --data bible --minutes 15 --lr 1e-3 2e-3 4e-3 --dropout 0.1 0.2

Other options (--width, --layers, --bsz, --seed, ...) are baseline_transformer.py's and apply to
every run of the grid. The record (default bench/quality/tune_transformer_<data>.json) holds every
row, the winner and its command. On a machine of several cores, run parts of the grid at the same
time, one core each, with their own --out, then combine their records into one:

    taskset -c 0 python bench/tune_transformer.py --data bible --lr 1e-3 --out /tmp/a.json &
    taskset -c 1 python bench/tune_transformer.py --data bible --lr 2e-3 --out /tmp/b.json
    python bench/tune_transformer.py --merge /tmp/a.json /tmp/b.json --out bench/quality/tune_transformer_bible.json
"""
import argparse
import json
import os
import shlex
import time

import torch

import baseline_transformer as baseline
from common import ROOT, table, write_json
from splits import SPLITS, load_split_pairs, score

from diffuseq.tokenizer import build_tokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(SPLITS), default="bible")
    p.add_argument("--minutes", type=float, default=15.0, help="training time of each setting")
    p.add_argument("--lr", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    p.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run")
    p.add_argument("--max_examples", type=int, default=None, help="score only the first N choose pairs")
    p.add_argument("--out", default=None, help="JSON record (default bench/quality/tune_transformer_<data>.json)")
    p.add_argument("--merge", nargs="+", default=None, metavar="RECORD",
                   help="train nothing: combine records of parts of one grid (the same data, minutes and "
                        "other options) into one record")
    a, rest = p.parse_known_args(argv)
    if a.merge:
        return merge(a.merge, a.out)
    shared = ["--data", a.data, "--minutes", f"{a.minutes:g}", "--threads", str(a.threads), *rest]
    base = baseline.parser().parse_args(shared)  # an option neither script knows stops here
    torch.set_num_threads(a.threads)
    spec = SPLITS[a.data]
    pairs, choose = load_split_pairs(a.data, "train"), load_split_pairs(a.data, "choose")
    scored = choose[:a.max_examples] if a.max_examples else choose
    tok = build_tokenizer("own", spec.folder, vocab_size=base.vocab_size)

    rows = []
    for lr in a.lr:
        for dropout in a.dropout:
            print(f"lr {lr:g}  dropout {dropout:g}", flush=True)
            run_args = baseline.parser().parse_args(shared + ["--lr", repr(lr), "--dropout", repr(dropout)])
            model, run = baseline.train(run_args, tok, pairs, choose, spec.seq_len)
            t0 = time.time()
            hyps = baseline.generate(model, scored, tok, 1, spec.seq_len)
            rows.append({"lr": lr, "dropout": dropout, "steps": run["steps"], "best_step": run["best_step"],
                         "best_valid_loss": run["best_valid_loss"], "train_s": run["train_s"],
                         "decode_s": round(time.time() - t0, 1), "choose": score(hyps, scored)})
            print(rows[-1], flush=True)
    others = {k: v for k, v in vars(base).items() if k not in ("lr", "dropout", "out")}  # the grid's runs share these
    record = {"data": a.data, "minutes": a.minutes, "threads": a.threads, "choose_pairs": len(scored),
              "grid": {"lr": a.lr, "dropout": a.dropout}, "args": others, "rows": rows}
    summarise(record, a.out)


def merge(paths, out):
    """One record from the records of parts of a grid, which must share data, minutes, threads,
    the scored pairs and the other options."""
    defaults = vars(baseline.parser().parse_args([]))
    parts = [json.load(open(path)) for path in paths]
    for part in parts:  # an option at its default is the same whether or not the record names it
        part["args"] = {k: v for k, v in part["args"].items() if v != defaults.get(k)}
    same = ("data", "minutes", "threads", "choose_pairs", "args")
    for path, part in zip(paths[1:], parts[1:]):
        differ = [k for k in same if part[k] != parts[0][k]]
        if differ:
            raise SystemExit(f"{path}: not a part of {paths[0]}'s grid: its {', '.join(differ)} differ")
    record = {k: parts[0][k] for k in same}
    record["rows"] = [row for part in parts for row in part["rows"]]
    record["grid"] = {k: sorted({row[k] for row in record["rows"]}) for k in ("lr", "dropout")}
    record["merged_from"] = [os.path.basename(path) for path in paths]
    summarise(record, out)


def summarise(record, out):
    """Print the grid's table and winner, add the winner and its command to record, write it."""
    rows = record["rows"]
    best = max(rows, key=lambda r: (r["choose"]["sentence_bleu"], -r["best_valid_loss"]))  # ties: the lower loss
    print(table(["lr", "dropout", "steps", "best step", "valid loss", "sent. BLEU", "BLEU", "ROUGE-L", "train s",
                 "decode s"],
                [[r["lr"], r["dropout"], r["steps"], r["best_step"], r["best_valid_loss"], r["choose"]["sentence_bleu"],
                  r["choose"]["bleu"], r["choose"]["rouge_l"], r["train_s"], r["decode_s"]] for r in rows]))
    defaults = vars(baseline.parser().parse_args([]))
    shared = ["--data", record["data"], "--minutes", f"{record['minutes']:g}", "--threads", str(record["threads"])]
    for k, v in record["args"].items():
        if k not in ("data", "minutes", "threads") and v != defaults.get(k):
            shared += [f"--{k}", *(map(str, v) if isinstance(v, list) else [str(v)])]
    command = shlex.join(["python", "bench/baseline_transformer.py", *shared,
                          "--lr", f"{best['lr']:g}", "--dropout", f"{best['dropout']:g}"])
    out = out or os.path.join(ROOT, "bench", "quality", f"tune_transformer_{record['data']}.json")
    record.update(best={"lr": best["lr"], "dropout": best["dropout"]}, command=command)
    print(f"best on the choose pairs: lr {best['lr']:g}, dropout {best['dropout']:g}, sentence BLEU "
          f"{best['choose']['sentence_bleu']}\ntrain it (and score the held-out pairs) with:\n  {command}")
    print("wrote", write_json(out, "tune_transformer", torch.device("cpu"), record))


if __name__ == "__main__":
    main()
