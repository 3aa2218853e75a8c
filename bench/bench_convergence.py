"""Training convergence of two recipes (DiffuSeq v1 against v2), read from the decoding choices
that `tune_decode.py` wrote into each checkpoint of each run: valid BLEU against steps, each
checkpoint decoded with its own best setting, and generating from noise with our deterministic
solver (no absorption). Prints the table, the steps each recipe needs to reach the other's BLEU,
and draws the curves.

    for s in 1000 2000 4000 8000; do python tune_decode.py --model_dir RUN/ckpt_000$s; done  # each run
    python bench/bench_convergence.py --runs v1=RUN_V1 v2=RUN_V2 --plot docs/convergence.png \
        --json bench/decoding/convergence.json
"""
import argparse
import json
import os
import sys

from common import ROOT  # noqa: F401  (puts the repository on the path)

from diffuseq import checkpoint as ckpt
from diffuseq.choice import describe, load_choice

PAPER = {"sampler": "dpm", "steps": 10, "init": "noise", "absorb_rate": 0.0}


def curve(run):
    """[(step, best score, its setting, paper-protocol score)] over the tuned checkpoints of a run."""
    out = []
    for path in ckpt.list_checkpoints(run):
        choice = load_choice(path)
        if not choice:
            continue
        metric = choice["metric"]
        best = max(choice["grid"], key=lambda r: r[metric])
        paper = next((r[metric] for r in choice["grid"] if r["settings"] == PAPER), None)
        out.append((ckpt.step_of(path), best[metric], describe(best["settings"]), paper))
    return out


def steps_to_reach(points, target):
    """The first step at which a curve [(step, score)] reaches target, interpolated linearly
    between checkpoints (None if it never does)."""
    prev = None
    for step, score in points:
        if score >= target:
            if prev is None or prev[1] >= target:
                return step
            (s0, b0) = prev
            return s0 + (target - b0) / (score - b0) * (step - s0)
        prev = (step, score)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs=2, required=True, metavar="NAME=RUN", help="two run folders")
    p.add_argument("--plot", default=None, help="write the curves as a PNG")
    p.add_argument("--json", default=None, help="write the record")
    a = p.parse_args(argv)
    runs = dict(r.split("=", 1) for r in a.runs)
    curves = {name: curve(path) for name, path in runs.items()}
    (n1, c1), (n2, c2) = curves.items()
    print(f"| steps | {n1} best | {n2} best | {n1} paper's protocol | {n2} paper's protocol |")
    print("|---|---|---|---|---|")
    for step in sorted({s for c in curves.values() for s, *_ in c}):
        r1 = next((r for r in c1 if r[0] == step), None)
        r2 = next((r for r in c2 if r[0] == step), None)
        cell = lambda r, i: "" if r is None or r[i] is None else f"{r[i]:.2f}"  # noqa: E731
        print(f"| {step} | {cell(r1, 1)} | {cell(r2, 1)} | {cell(r1, 3)} | {cell(r2, 3)} |")
    reach = {}
    for (na, ca), (nb, cb) in (((n1, c1), (n2, c2)), ((n2, c2), (n1, c1))):
        for i, kind in ((1, "best"), (3, "paper")):
            final = ca[-1]
            if final[i] is None:
                continue
            other = steps_to_reach([(r[0], r[i]) for r in cb if r[i] is not None], final[i])
            reach[f"{nb} reaches {na}'s {kind} at {final[0]} steps ({final[i]:.2f})"] = other
    for k, v in reach.items():
        print(f"{k}: {'never, within its steps' if v is None else f'{v:.0f} steps'}")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, c in curves.items():
            ax.plot([r[0] for r in c], [r[1] for r in c], "o-", label=f"{name}, best setting")
            ax.plot([r[0] for r in c if r[3] is not None], [r[3] for r in c if r[3] is not None], "s--",
                    label=f"{name}, paper's protocol")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training steps")
        ax.set_ylabel("valid sentence BLEU")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"wrote {a.plot}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "curves": curves, "reach": reach}, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
