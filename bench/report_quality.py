"""The held-out table of docs/quality.md from the records of bench/baseline_transformer.py and
bench/bench_heldout.py: per data set, copying the source, the autoregressive baseline (greedy,
beam 4) and each diffusion run's best decoding and best generation from noise; "MBR sent. BLEU" is
the sentence BLEU of the minimum-Bayes-risk pick among the seeds' outputs (records since
2026-12-03 12:00).

    python bench/report_quality.py                 # every data set with records
    python bench/report_quality.py --data bible --runs bible_default bible_src50
    python bench/report_quality.py --data bible --baselines bible bible_60   # baseline_bible_60.json too
"""
import argparse
import glob
import json
import os
import sys

from baseline_transformer import parser as baseline_parser
from common import ROOT

from diffuseq.config import parse_train_args
from diffuseq.family import family_of
from diffuseq.recipes import RECIPES

QUALITY = os.path.join(ROOT, "bench", "quality")


def _cells(s, seconds=None):
    cells = [f"{s['sentence_bleu']:.1f}", f"{s['bleu']:.1f}", f"{s['rouge_l']:.1f}"]
    cells += [f"{s['self_bleu']:.1f}", f"{s['div4']:.1f}"] if "self_bleu" in s else ["", ""]
    cells += [f"{s['mbr']['sentence_bleu']:.1f}" if "mbr" in s else ""]
    return cells + ["" if seconds is None else f"{seconds:,.1f}"]


# the options a row's label names where its run differs from its recipe as it stands today
SHOWN = ("layers", "width", "hidden_dim", "lr", "lr_schedule", "ema_rate", "bsz", "dropout", "anchor_weight",
         "self_cond", "source_rate", "source_t_max", "both_directions", "eval_batches", "seed",
         "mask_weighting", "time_cond", "coupled", "label_smoothing", "visible_weight")


def _flag(k, v):
    return f"--{k} {str(v).lower() if isinstance(v, bool) else format(v, 'g') if isinstance(v, float) else v}"


def _label(rec):
    """The run as a reader knows it: its recipe, and the options (SHOWN) where it differs from it."""
    a = rec.get("run_args") or {}
    recipe = str(rec.get("recipe"))
    if recipe.startswith("original"):  # the papers' profile, at a CPU shape
        shape = f" at width {a['width']}, {a['layers']} layers, batch {a['bsz']}" if a.get("width") else ""
        return f"`{recipe}`{shape}"
    ref = parse_train_args(["--recipe", recipe]).to_dict() if recipe in RECIPES else {}
    flags = [_flag(k, a[k]) for k in SHOWN if k in a and k in ref and a[k] != ref[k]]
    return f"`{recipe}`" + (f" `{' '.join(flags)}`" if flags else "")


def transformer_label(base, shape=True):
    """A baseline record as a reader knows it: its shape, the lr and dropout where they differ from
    baseline_transformer.py's defaults, and whether its shorter points come from the same run."""
    a, defaults = base["args"], vars(baseline_parser().parse_args([]))
    label = f"Transformer {a['layers']}+{a['layers']} layers, width {a['width']}" if shape else "Transformer"
    tuned = [f"{k} {a[k]:g}" for k in ("lr", "dropout") if a.get(k, defaults[k]) != defaults[k]]
    if base.get("snapshots"):
        tuned.append(f"one {base['minutes']:g}-minute run")
    return label + (f" ({', '.join(tuned)})" if tuned else "")


def _transformer_rows(base):
    """The rows of one baseline record: greedy and beam 4 at each of its snapshots, then at its end."""
    label = transformer_label(base)
    rows = []
    for minutes, decoders in [(s["minutes"], s["decoders"]) for s in base.get("snapshots", [])] + \
            [(base["minutes"], base["decoders"])]:
        for name, shown in (("greedy", "greedy"), ("beam4", "beam 4")):
            d = decoders[name]
            rows.append([label, f"{minutes:g}", shown, *_cells(d, d["decode_s"])])
    return rows


def noise_row(rec):
    """A held-out record's generation from the prior: its "noise" row, or its best where the best
    setting starts from the prior itself (bench_heldout.py then decodes one row; a masked grid always)."""
    return rec["rows"].get("noise", rec["rows"]["best"])


def rows_for(data, runs=None, baselines=None):
    """Markdown rows of one data set: [label, minutes, decoding, scores...]. baselines: the names of
    baseline records (bench/quality/baseline_<name>.json; default [data])."""
    rows = []
    paths = [os.path.join(QUALITY, f"baseline_{name}.json") for name in (baselines or [data])]
    bases = [json.load(open(path)) for path in paths if os.path.isfile(path)]
    bases = [b for b in bases if b["data"] == data]
    base = bases[0] if bases else None
    heldout = []
    for path in sorted(glob.glob(os.path.join(QUALITY, "heldout_*.json"))):
        rec = json.load(open(path))
        name = os.path.basename(path)[len("heldout_"):-len(".json")]
        if rec.get("data") == data and (runs is None or name in runs):
            heldout.append((name, rec))
    if runs is not None:  # in the order given
        heldout.sort(key=lambda nr: runs.index(nr[0]))
    copy = base["copy"] if base else (heldout[0][1]["copy"] if heldout else None)
    if copy is None:
        return []
    rows.append(["copy the source", "", "", *_cells(copy)])
    for b in bases:
        rows += _transformer_rows(b)
    for name, rec in heldout:
        minutes = rec.get("train_minutes")
        if "best" not in rec["rows"]:  # named decoders, none chosen
            for r in rec["rows"].values():
                seeds = f" ({r['seeds']} seeds)" if r.get("seeds", 5) != 5 else ""  # the diversity and MBR columns'
                rows.append([_label(rec), "" if minutes is None else f"{minutes:g}", r["decoder"] + seeds,
                             *_cells(r, r["seconds_per_seed"])])
            continue
        best = rec["rows"]["best"]
        noise = noise_row(rec)
        prior = family_of(argparse.Namespace(**(rec.get("run_args") or {}))).generation
        for r, tag in ((best, " (best on valid)"), (noise, " (best from noise)")):
            if tag.endswith("(best from noise)") and noise["settings"] == best["settings"]:
                continue  # the best setting is a noise start: one row says both
            tag = f" (best on valid, {prior})" if noise["settings"] == best["settings"] else tag
            rows.append([_label(rec), "" if minutes is None else f"{minutes:g}", r["decoder"] + tag,
                         *_cells(r, r["seconds_per_seed"])])
    return rows


def markdown(data, runs=None, baselines=None):
    rows = rows_for(data, runs, baselines)
    if not rows:
        return ""
    head = ["model", "train min", "decoding", "sent. BLEU", "BLEU", "ROUGE-L", "self-BLEU", "Div-4", "MBR sent. BLEU",
            "decode s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="*", default=["bible", "qqp", "iwslt"])
    p.add_argument("--runs", nargs="*", default=None,
                   help="heldout record names, in the order of the rows (default: all of the data set)")
    p.add_argument("--baselines", nargs="*", default=None,
                   help="Transformer records bench/quality/baseline_<name>.json, in the order of the rows "
                        "(default: baseline_<data>.json)")
    a = p.parse_args(argv)
    for d in a.data:
        table = markdown(d, a.runs, a.baselines)
        if table:
            print(f"### {d}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
