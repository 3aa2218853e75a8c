"""Tune the Transformer baseline's learning rate and dropout: train bench/baseline_transformer.py
once per (lr, dropout) of a grid, for the same minutes on one thread, decode the choose pairs of
bench/splits.py greedily, and keep the setting of the best sentence BLEU. The held-out pairs are
not looked at: the command printed at the end trains the winner and scores them.

    taskset -c 0 python bench/tune_transformer.py --data qqp --minutes 10
    taskset -c 0 python bench/tune_transformer.py --data bible --minutes 15 --lr 1e-3 2e-3 4e-3 --dropout 0.1 0.2

Other options (--width, --layers, --bsz, --seed, ...) are baseline_transformer.py's and apply to
every run of the grid. The record (default bench/quality/tune_transformer_<data>.json) holds every
row, the winner and its command.
"""
import argparse
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
    a, rest = p.parse_known_args(argv)
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
    best = max(rows, key=lambda r: (r["choose"]["sentence_bleu"], -r["best_valid_loss"]))  # ties: the lower loss

    print(table(["lr", "dropout", "steps", "best step", "valid loss", "sent. BLEU", "BLEU", "ROUGE-L", "train s",
                 "decode s"],
                [[r["lr"], r["dropout"], r["steps"], r["best_step"], r["best_valid_loss"], r["choose"]["sentence_bleu"],
                  r["choose"]["bleu"], r["choose"]["rouge_l"], r["train_s"], r["decode_s"]] for r in rows]))
    command = shlex.join(["python", "bench/baseline_transformer.py", *shared,
                          "--lr", f"{best['lr']:g}", "--dropout", f"{best['dropout']:g}"])
    out = a.out or os.path.join(ROOT, "bench", "quality", f"tune_transformer_{a.data}.json")
    others = {k: v for k, v in vars(base).items() if k not in ("lr", "dropout", "out")}  # the grid's runs share these
    record = {"data": a.data, "minutes": a.minutes, "threads": a.threads, "choose_pairs": len(scored),
              "grid": {"lr": a.lr, "dropout": a.dropout}, "args": others, "rows": rows,
              "best": {"lr": best["lr"], "dropout": best["dropout"]}, "command": command}
    print(f"best on the choose pairs: lr {best['lr']:g}, dropout {best['dropout']:g}, sentence BLEU "
          f"{best['choose']['sentence_bleu']}\ntrain it (and score the held-out pairs) with:\n  {command}")
    print("wrote", write_json(out, "tune_transformer", torch.device("cpu"), record))


if __name__ == "__main__":
    main()
