"""One trained run scored as docs/quality.md scores every model: decoding chosen on the choose
pairs of bench/splits.py, scores on the held-out pairs, next to copying the source.

    python bench/bench_heldout.py --model_dir RUN --data bible --name bible_default --threads 1

Two rows: the best setting of the grid on the choose pairs ("best"), and the best generation
from noise ("noise", DiffuSeq's protocol, named by the decoder it runs). Each is decoded with
--seeds seeds: the row's BLEU and ROUGE-L are the first seed's, and the seeds give self-BLEU
and Div-4 (the papers' diversity), the mean sentence BLEU of one seed, and the scores of the
minimum-Bayes-risk pick among the seeds' outputs (the DiffuSeq paper's MBR). The record
(bench/quality/heldout_<name>.json) keeps the grid, the settings, the scores and the first 5
held-out outputs of each row.
"""
import argparse
import json
import os
import sys
import time

from bench_decoding import EXTRA
from common import ROOT, header_lines, write_json
from splits import SPLITS, load_split_pairs, score

import torch

from diffuseq.choice import describe
from diffuseq.decoding import load_model
from diffuseq.logs import read_curves
from diffuseq.metrics import evaluate
from diffuseq.tuning import GRID_NAMES, choose, scaled, tune


def decode_row(model, settings, pairs, seeds, bsz):
    src, ref = [s for s, _ in pairs], [r for _, r in pairs]
    t0 = time.time()
    outs = [model.generate(src, seed=k, bsz=bsz, use_saved=False, **settings) for k in range(seeds)]
    seconds = time.time() - t0
    row = dict(settings=settings, decoder=describe(settings), seconds_per_seed=round(seconds / seeds, 2),
               **score(outs[0], pairs))
    if seeds > 1:
        # one pass: the diversity across the seeds, and the scores of the MBR pick among them
        div = evaluate([list(c) for c in zip(*outs)], ref, mbr=True)
        row.update(seeds=seeds, self_bleu=round(div["self_bleu"], 2), div4=round(div["div4"], 2),
                   sentence_bleu_mean_seed=round(div["sentence_bleu_mean_candidate"], 2),
                   mbr={k: round(div[k], 2) for k in ("sentence_bleu", "bleu", "rouge_l")})
    row["examples"] = [dict(source=s, reference=r, output=o) for (s, r), o in zip(pairs[:5], outs[0])]
    return row


def best_and_noise(rows):
    """The rows to decode on the held-out pairs: the best setting on the choose pairs, and the best
    of those that start from noise where it is another. Both follow the tuner's rule (ties go to
    the faster setting), so a masked grid, which starts from the prior throughout, gives one row."""
    best = choose(rows)["best"]
    noise = choose([r for r in rows if r["settings"]["init"] == "noise"])["best"]
    return [("best", best)] + ([("noise", noise)] if noise != best else [])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--data", choices=sorted(SPLITS), required=True)
    p.add_argument("--grid", choices=GRID_NAMES, default="quick")
    p.add_argument("--decoders", nargs="+", default=None,
                   help="decode these named settings of bench_decoding.py's EXTRA instead of choosing on the "
                        "choose pairs (one row each, e.g. original_v2_10 for the original's own solver)")
    p.add_argument("--settings", default=None,
                   help="decode these settings (JSON) as the best row instead of choosing on the choose pairs")
    p.add_argument("--seeds", type=int, default=5, help="decodings of each row, for the diversity columns")
    p.add_argument("--max_examples", type=int, default=None, help="only the first N held-out pairs")
    p.add_argument("--bsz", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", required=True)
    p.add_argument("--weights", choices=["ema", "model", "choose"], default="ema",
                   help="decode with the EMA weights, the raw ones, or whichever scores higher on the choose pairs")
    p.add_argument("--out", default=None, help="default bench/quality/heldout_<name>.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model_dir, "cpu", use_ema=a.weights != "model")
    chooser, held = load_split_pairs(a.data, "choose"), load_split_pairs(a.data, "test")[:a.max_examples]
    head = header_lines("bench_heldout", model.device, f"{model.path}, choose on {len(chooser)}, score {len(held)}")
    print(head, flush=True)
    weights_grid = None
    if a.settings:
        rows, todo = [], [("best", json.loads(a.settings))]
    elif a.decoders:
        rows, todo = [], [(n, EXTRA[n]) for n in a.decoders]
    else:
        grid = scaled(model.family.grids[a.grid], model.args.diffusion_steps)
        rows = tune(model, [s for s, _ in chooser], [r for _, r in chooser], grid, a.bsz)
        if a.weights == "choose":  # the raw weights too, and the better on the choose pairs decodes
            raw = load_model(a.model_dir, "cpu", use_ema=False)
            raw_rows = tune(raw, [s for s, _ in chooser], [r for _, r in chooser], grid, a.bsz)
            weights_grid = {model.weights: rows, raw.weights: raw_rows}
            if max(r["sentence_bleu"] for r in raw_rows) > max(r["sentence_bleu"] for r in rows):
                model, rows = raw, raw_rows
            print(f"weights: {model.weights} (best on the choose pairs)", flush=True)
        todo = best_and_noise(rows)
    out = {}
    for name, settings in todo:
        out[name] = decode_row(model, settings, held, a.seeds, a.bsz)
        r = out[name]
        print(f"{name}: {r['decoder']}: sentence BLEU {r['sentence_bleu']:.2f}, ROUGE-L {r['rouge_l']:.2f}"
              + (f", self-BLEU {r['self_bleu']:.1f}, Div-4 {r['div4']:.1f}, MBR of {r['seeds']}: "
                 f"{r['mbr']['sentence_bleu']:.2f}" if "div4" in r else ""), flush=True)
    copy = score([s for s, _ in held], held)
    print(f"copy: sentence BLEU {copy['sentence_bleu']:.2f}, ROUGE-L {copy['rouge_l']:.2f}")
    path = a.out or os.path.join(ROOT, "bench", "quality", f"heldout_{a.name}.json")
    run_args = model.args.to_dict()
    # the training time of this checkpoint (not of the run's end: a run's earlier checkpoint is scored too)
    step = int(os.path.basename(os.path.normpath(model.path)).split("_")[-1]) if "ckpt_" in model.path else None
    curves = [c for c in read_curves(os.path.dirname(os.path.normpath(model.path)))
              if "elapsed" in c and (step is None or c["step"] <= step)]
    write_json(path, "bench_heldout", model.device, dict(
        header=head, command=" ".join(["python"] + sys.argv), model=model.path, data=a.data,
        recipe=run_args.get("recipe"), run_args={k: run_args.get(k) for k in (
                   "source_rate", "source_t_max", "self_cond", "t_min", "max_minutes", "learning_steps", "width",
                   "layers", "bsz", "lr", "anchor_weight", "eval_batches", "lr_schedule", "ema_rate", "dropout",
                   "hidden_dim", "both_directions", "seed", "family", "mask_weighting", "time_cond", "coupled",
                   "label_smoothing", "visible_weight", "embed_std")},
        train_minutes=round(curves[-1]["elapsed"] / 60, 1) if curves else None,
        train_steps=curves[-1]["step"] if curves else None, checkpoint=os.path.basename(model.path),
        weights=model.weights, **({"grid_by_weights": weights_grid} if a.weights == "choose" and not a.decoders else {}),
        choose=len(chooser), held_out=len(held), grid=rows, rows=out, copy=copy))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
