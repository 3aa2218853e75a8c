"""docs/quality_minutes.png: held-out sentence BLEU against training minutes (one core), one panel
per data set, from the records in bench/quality/:

- each minutes_<data>_*.json (bench_minutes.py): a run's checkpoints at one decoding, a line;
- the Gaussian family's generation from noise (bench_heldout.py records named in GAUSSIAN), points;
- the Transformer (baseline_<data>.json), greedy and beam 4, points at its minutes;
- copying the source, a horizontal line.

    python bench/plot_minutes.py [--out docs/quality_minutes.png]
"""
import argparse
import glob
import json
import os
import sys

from common import ROOT

QUALITY = os.path.join(ROOT, "bench", "quality")
DATA = {"bible": "Bible (KJV -> WEB)", "qqp": "qqp_small", "iwslt": "iwslt14_small (de -> en)"}
# the Gaussian recipe's runs of docs/quality.md's headline rows
GAUSSIAN = {"bible": ["heldout_bible_l4lr2anc"], "qqp": ["heldout_qqp_both10"], "iwslt": ["heldout_iwslt_l4lr2doanc"]}


def load(name):
    with open(os.path.join(QUALITY, name + ".json")) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "quality_minutes.png"))
    a = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (data, title) in zip(axes, DATA.items()):
        base = load(f"baseline_{data}")
        ax.axhline(base["copy"]["sentence_bleu"], color="grey", ls="--", label="copy the source")
        for dec, marker in (("greedy", "s"), ("beam4", "D")):
            ax.plot([base["minutes"]], [base["decoders"][dec]["sentence_bleu"]], marker, color="black",
                    label=f"Transformer, {dec}")
        for name in GAUSSIAN[data]:
            if os.path.isfile(os.path.join(QUALITY, name + ".json")):
                r = load(name)
                ax.plot([r["train_minutes"]], [r["rows"]["noise"]["sentence_bleu"]], "o", color="tab:blue",
                        label=f"Gaussian ({r['recipe']}), {r['rows']['noise']['decoder']}")
        for path in sorted(glob.glob(os.path.join(QUALITY, f"minutes_{data}_*.json"))):
            with open(path) as f:
                r = json.load(f)
            pts = [q for q in r["points"] if q["minutes"] is not None]
            ax.plot([q["minutes"] for q in pts], [q["sentence_bleu"] for q in pts], "-o", ms=3,
                    label=f"{r.get('family', 'gaussian')} ({r['recipe']}), {r['decoder']}")
        ax.set_title(title)
        ax.set_xlabel("training minutes, one core")
        ax.set_ylabel("held-out sentence BLEU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
