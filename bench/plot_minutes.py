"""docs/quality_minutes.png: held-out sentence BLEU against training minutes (one core), one panel
per data set, from the records in bench/quality/:

- each minutes_<data>_*.json (bench_minutes.py): a run's checkpoints at one decoding, a line;
- the Gaussian family's generation from noise (bench_heldout.py records named in GAUSSIAN), points;
- the Transformer (baseline_<data>.json, baseline_<data>_*.json), greedy and beam 4, at its
  minutes and its snapshots' (a line where it has several);
- copying the source, a horizontal line.

    python bench/plot_minutes.py [--out docs/quality_minutes.png]
"""
import argparse
import glob
import json
import os
import sys

from common import ROOT
from report_quality import noise_row, transformer_label

QUALITY = os.path.join(ROOT, "bench", "quality")
DATA = {"bible": "Bible (KJV -> WEB)", "qqp": "qqp_small", "iwslt": "iwslt14_small (de -> en)"}
# the Gaussian recipe's runs of docs/quality.md's headline rows
GAUSSIAN = {"bible": ["heldout_bible_l4lr2anc", "heldout_bible_gauss60"], "qqp": ["heldout_qqp_both10", "heldout_qqp_gauss60"],
            "iwslt": ["heldout_iwslt_l4lr2doanc", "heldout_iwslt_gauss60"]}


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
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.2))
    for ax, (data, title) in zip(axes, DATA.items()):
        base = load(f"baseline_{data}")
        ax.axhline(base["copy"]["sentence_bleu"], color="grey", ls="--", label="copy the source")
        names = [f"baseline_{data}"] + sorted(os.path.basename(q)[:-5] for q in
                                              glob.glob(os.path.join(QUALITY, f"baseline_{data}_*.json")))
        for name, color in zip(names, ("black", "tab:red", "tab:purple")):
            r = load(name)
            points = [(q["minutes"], q["decoders"]) for q in r.get("snapshots", [])] + [(r["minutes"], r["decoders"])]
            for dec, marker in (("greedy", "s"), ("beam4", "D")):
                ax.plot([m for m, _ in points], [d[dec]["sentence_bleu"] for _, d in points], marker,
                        ls="-" if len(points) > 1 else "", color=color, ms=4, label=f"{transformer_label(r, shape=False)}, {dec}")
        shown = set()
        for name in GAUSSIAN[data]:
            if os.path.isfile(os.path.join(QUALITY, name + ".json")):
                r = load(name)
                row = noise_row(r)
                label = f"Gaussian ({r['recipe']}), {row['decoder']}, all held-out pairs"
                ax.plot([r["train_minutes"]], [row["sentence_bleu"]], "o", color="tab:blue",
                        label=None if label in shown else label)
                shown.add(label)
        drawn = set()
        for path in sorted(glob.glob(os.path.join(QUALITY, f"minutes_{data}_*.json"))):
            with open(path) as f:
                r = json.load(f)
            pts = [q for q in r["points"] if q["minutes"] is not None]
            family = r.get("family", "gaussian")
            again = family in drawn  # a second run of a family: dashed
            drawn.add(family)
            ax.plot([q["minutes"] for q in pts], [q["sentence_bleu"] for q in pts], "--o" if again else "-o",
                    ms=3, color={"gaussian": "tab:blue", "masked": "tab:orange"}.get(family),
                    label=f"{family} ({r['recipe']}, {pts[-1]['minutes']:.0f}-minute run), {r['decoder']}")
        ax.set_title(title)
        ax.set_xlabel("training minutes, one core")
        ax.set_ylabel("held-out sentence BLEU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: the lines stay clear
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
