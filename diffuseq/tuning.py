"""Decoding settings chosen on validation and saved with the checkpoint.

Which decoding is best depends on the task: a model that modernises verses or paraphrases
questions does best as an editor of its source (init "source"), one that translates does not.
`tune` decodes part of the valid split with each setting of a small grid, scores it, and
`save_choice` writes the winners as `decoding.json` in the checkpoint folder:

    {"metric": "sentence_bleu", "split": "valid", "examples": 200, "data_dir": ...,
     "best": {settings}, "dpm": {settings}, "ancestral": {settings}, "grid": [rows]}

"best" is what `DiffuSeq.generate` uses, "dpm" what `run_decode_solver.py` uses, "ancestral"
what `run_decode.py` uses, each unless the caller sets an option itself (see `choice.merge`).
Settings are keyword arguments of `DiffuSeq.sample_ids`, restricted to `choice.SETTINGS`.
"""
import json
import os
import time

from .checkpoint import CheckpointError, write_atomic

from .choice import FILE, SAMPLERS, describe

# each family has its grids of settings (gaussian.GRIDS, masked_samplers.GRIDS), cheapest first: "quick" is
# what the default job tries, "full" searches more
GRID_NAMES = ("quick", "full")
METRICS = ("sentence_bleu", "bleu", "rouge_l")
GRID_T = 2000  # the grids' start times are for T = 2000 training timesteps


def scaled(grid, T):
    """The grid for a model of T training timesteps: each t_start scaled by T / GRID_T, at least
    1 and below T, duplicates dropped."""
    out = []
    for s in grid:
        if s.get("t_start") is not None:
            s = dict(s, t_start=min(T - 1, max(1, round(s["t_start"] * T / GRID_T))))
        if s not in out:
            out.append(s)
    return out


def tune(model, sources, references, grid, bsz=100, seed=0, metric="sentence_bleu", log=print):
    """Decode `sources` with every setting of `grid` and score against `references`: one row per
    setting {settings, sentence_bleu, bleu, rouge_l, avg_len, seconds, sent_per_s}, in grid
    order."""
    from .metrics import evaluate
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    rows = []
    for s in grid:
        t0 = time.time()
        out = model.generate(sources, seed=seed, bsz=bsz, use_saved=False, **s)
        dt = time.time() - t0
        scores = evaluate([[o] for o in out], references, mbr=False)
        row = dict(settings=s, seconds=round(dt, 2), sent_per_s=round(len(sources) / max(dt, 1e-9), 1),
                   **{k: round(scores[k], 2) for k in ("sentence_bleu", "bleu", "rouge_l", "avg_len")})
        rows.append(row)
        if log:
            log(f"  {describe(s):<40} {metric} {row[metric]:6.2f}  ({dt:.1f} s)")
    return rows


def copy_line(sources, references):
    """The scores of copying each source as its output (rounded as the grid's rows)."""
    from .metrics import evaluate
    return {k: round(v, 2) for k, v in evaluate([[s] for s in sources], references, mbr=False).items()}


def choose(rows, metric="sentence_bleu"):
    """The best row overall and per sampler: {"best": settings, "dpm": ..., "ancestral": ...}
    (a sampler absent from the grid is None). Ties go to the faster setting."""
    def best(cands):
        return max(cands, key=lambda r: (r[metric], -r["seconds"]))["settings"] if cands else None
    out = {"best": best(rows)}
    for sampler in SAMPLERS:
        out[sampler] = best([r for r in rows if r["settings"]["sampler"] == sampler])
    return out


def table(rows, copy=None, metric="sentence_bleu"):
    """The grid as a Markdown table, best first, with the copy-the-source line last."""
    lines = ["| decoding | sentence BLEU | corpus BLEU | ROUGE-L | length | s | sent/s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r[metric]):
        lines.append(f"| {describe(r['settings'])} | {r['sentence_bleu']:.2f} | {r['bleu']:.2f} | "
                     f"{r['rouge_l']:.2f} | {r['avg_len']:.1f} | {r['seconds']:.1f} | {r['sent_per_s']:.0f} |")
    if copy:
        lines.append(f"| copy the source | {copy['sentence_bleu']:.2f} | {copy['bleu']:.2f} | "
                     f"{copy['rouge_l']:.2f} | {copy['avg_len']:.1f} | | |")
    return "\n".join(lines)


def save_choice(ckpt_dir, rows, metric, split, data_dir, examples, copy=None):
    """Write decoding.json into the checkpoint folder (atomically); returns its path."""
    path = os.path.join(ckpt_dir, FILE)
    body = dict(metric=metric, split=split, data_dir=data_dir, examples=examples, **choose(rows, metric),
                grid=rows, copy_source=copy)
    write_atomic(path, json.dumps(body, indent=1) + "\n")
    return path


def tune_parser():
    import argparse
    from .config import HelpFormatter, _bool
    p = argparse.ArgumentParser(
        description="Choose the decoding settings of a checkpoint on validation data: decode the first "
                    "--max_examples inputs of a split with each setting of a grid (init noise or source, "
                    "start time, steps, absorption, sampler), print the table with scores and times, and "
                    f"write the winners as {FILE} in the checkpoint folder. run_decode_solver.py, "
                    "run_decode.py and generate() then decode with them unless told otherwise.",
        formatter_class=HelpFormatter)
    p.add_argument("--model_dir", required=True,
                   help="a checkpoint folder, or a run folder (its checkpoint chosen by validation loss "
                        "where recorded, else its latest)")
    p.add_argument("--split", default="valid", help="which <split>.jsonl of the data folder to score on")
    p.add_argument("--data_dir", default=None, help="data folder (default: the one the model was trained on)")
    p.add_argument("--max_examples", type=int, default=200, help="inputs decoded per setting")
    p.add_argument("--grid", choices=GRID_NAMES, default="quick",
                   help="quick: the default job's (Gaussian models: 13 settings); full: more (Gaussian: 32, with the "
                        "ancestral chain and the SDE solver); each model family has its own")
    p.add_argument("--metric", choices=METRICS, default="sentence_bleu", help="what the choice maximises")
    p.add_argument("--bsz", type=int, default=100, help="sentences per batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the decodings")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, ...")
    p.add_argument("--write", type=_bool, default=True,
                   help=f"write {FILE} (false: only print the table)")
    return p


def main(argv=None):
    import sys
    from .data.dataset import DataError, read_pairs
    from .decoding import load_model
    from .tokenizer import TokenizerError
    a = tune_parser().parse_args(argv)
    try:
        model = load_model(a.model_dir, a.device)
        data_dir = a.data_dir or model.args.data_dir
        pairs = list(read_pairs(os.path.join(data_dir, f"{a.split}.jsonl")))[:a.max_examples]
        if not pairs:
            raise DataError(f"{data_dir}/{a.split}.jsonl: no pairs to score against")
        src, ref = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"choosing the decoding of {model.path} on {len(pairs)} inputs of {a.split}.jsonl "
              f"({a.grid} grid, {a.metric}):")
        rows = tune(model, src, ref, scaled(model.family.grids[a.grid], model.args.diffusion_steps), a.bsz, a.seed, a.metric)
        copy = copy_line(src, ref)
    except (CheckpointError, DataError, TokenizerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(table(rows, copy, a.metric))
    best = choose(rows, a.metric)
    print(f"\nchosen: {describe(best['best'])}")
    if a.write:
        print(f"wrote {save_choice(model.path, rows, a.metric, a.split, data_dir, len(pairs), copy)}")
    return 0
