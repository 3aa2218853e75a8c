"""The decoding frontier of one checkpoint: sampler x steps x init, with BLEU, ROUGE-L and time,
next to copying the source, and MBR over several candidates.

    taskset -c 0 python bench/bench_decoding.py --model_dir RUN --split test --max_examples 500 \
        --name bible --threads 1
    python bench/bench_decoding.py --model_dir RUN --split test --max_examples 200 --only anc2000 dpm10 ...
    python bench/bench_decoding.py --report bench/decoding/bible.json

Settings are those of the tuning grid (`--grid full`, see diffuseq/tuning.py) plus the ancestral
chain at 10 / 20 / 50 / 200 steps; `--only NAME ...` runs a few named ones (see EXTRA). `--mbr K
...` decodes K candidates with the best setting and picks one by MBR. One JSON record per run in
bench/decoding/<name>.json; rows are in run order, the table is sorted by score.
"""
import argparse
import json
import os
import sys
import time

from common import ROOT, header_lines, write_json

import torch

from diffuseq.data.dataset import read_pairs
from diffuseq.decoding import load_model
from diffuseq.metrics import evaluate
from diffuseq.choice import describe
from diffuseq.tuning import GRID_NAMES, copy_line, scaled, table, tune

EXTRA = {  # name -> settings, for --only and the generation-from-noise rows (our decoders)
    "anc10": dict(sampler="ancestral", steps=10, init="noise"),
    "anc20": dict(sampler="ancestral", steps=20, init="noise"),
    "anc50": dict(sampler="ancestral", steps=50, init="noise"),
    "anc200": dict(sampler="ancestral", steps=200, init="noise"),
    "anc2000": dict(sampler="ancestral", steps=2000, init="noise"),
    "anc50_noabsorb": dict(sampler="ancestral", steps=50, init="noise", absorb_rate=0.0),
    "dpm10_paper": dict(sampler="dpm", steps=10, init="noise", absorb_rate=0.0),
    "dpm20_paper": dict(sampler="dpm", steps=20, init="noise", absorb_rate=0.0),
    "dpm10": dict(sampler="dpm", steps=10, init="noise"),
    "dpm10_uniform": dict(sampler="dpm", steps=10, init="noise", skip="time_uniform"),
    "dpm10_uniform_paper": dict(sampler="dpm", steps=10, init="noise", skip="time_uniform", absorb_rate=0.0),
    "dpm10_first": dict(sampler="dpm", steps=10, init="noise", after_absorb="first"),
    "dpm20": dict(sampler="dpm", steps=20, init="noise"),
    "dpm20_first": dict(sampler="dpm", steps=20, init="noise", after_absorb="first"),
    "dpm40": dict(sampler="dpm", steps=40, init="noise"),
    "dpm10_lengths3": dict(sampler="dpm", steps=10, init="noise", length_beam=3),
    "dpm10_confidence": dict(sampler="dpm", steps=10, init="noise", remask="confidence"),
    "dpm20_confidence": dict(sampler="dpm", steps=20, init="noise", remask="confidence"),
    "original_v2_10": dict(sampler="original-v2", steps=10, init="noise"),
    "source50_1": dict(sampler="dpm", steps=1, init="source", t_start=50, lengths="source"),
    "source1_1": dict(sampler="dpm", steps=1, init="source", t_start=1, lengths="source"),
    "source50_1_edits2": dict(sampler="dpm", steps=1, init="source", t_start=50, edits=2),
    "source50_1_edits3": dict(sampler="dpm", steps=1, init="source", t_start=50, edits=3),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir")
    p.add_argument("--data_dir", default=None, help="default: the model's")
    p.add_argument("--split", default="test")
    p.add_argument("--max_examples", type=int, default=500)
    p.add_argument("--grid", choices=GRID_NAMES, default="full")
    p.add_argument("--only", nargs="+", default=None, help=f"named settings only: {', '.join(EXTRA)}")
    p.add_argument("--mbr", nargs="*", type=int, default=[], help="candidate counts for MBR with the best setting")
    p.add_argument("--bsz", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", default="decoding")
    p.add_argument("--out", default=None, help="default bench/decoding/<name>.json")
    p.add_argument("--report", default=None, help="print the table of a record and stop")
    a = p.parse_args(argv)
    if a.report:
        rec = json.load(open(a.report))
        print(rec["header"])
        print(table(rec["rows"], rec["copy"]))
        for r in rec.get("mbr", []):
            print(f"MBR over {r['candidates']}: sentence BLEU {r['sentence_bleu']:.2f}, ROUGE-L {r['rouge_l']:.2f}, "
                  f"{r['seconds']:.1f} s")
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model_dir, "cpu")
    data_dir = a.data_dir or model.args.data_dir
    pairs = list(read_pairs(os.path.join(data_dir, f"{a.split}.jsonl")))[:a.max_examples]
    src, ref = [p[0] for p in pairs], [p[1] for p in pairs]
    T = model.args.diffusion_steps
    # the Gaussian family's extra rows: the ancestral chain and the paper's uniform DPM-Solver grid
    extra = [EXTRA[n] for n in ("anc10", "anc200", "dpm10_uniform", "dpm10_uniform_paper")
             if EXTRA[n]["sampler"] in model.family.samplers]
    grid = [EXTRA[n] for n in a.only] if a.only else scaled(model.family.grids[a.grid] + extra, T)
    head = header_lines("bench_decoding", model.device,
                        f"{model.path}, {len(pairs)} inputs of {a.split}.jsonl")
    print(head, flush=True)
    copy = copy_line(src, ref)
    rows = tune(model, src, ref, grid, a.bsz, seed=0)
    print(table(rows, copy))
    mbr = []
    if a.mbr:
        best = max(rows, key=lambda r: r["sentence_bleu"])["settings"]
        for k in a.mbr:
            t0 = time.time()
            cands = model.generate(src, num_samples=k, bsz=a.bsz, use_saved=False, **best) if k > 1 else \
                [model.generate(src, bsz=a.bsz, use_saved=False, **best)]
            per_input = [list(c) for c in zip(*cands)]
            t_dec = time.time() - t0
            s = evaluate(per_input, ref, mbr=True)
            mbr.append(dict(candidates=k, settings=best, seconds=round(time.time() - t0, 2),
                            decode_seconds=round(t_dec, 2),
                            **{x: round(s[x], 2) for x in ("sentence_bleu", "bleu", "rouge_l")}))
            print(f"MBR over {k} of {describe(best)}: sentence BLEU {s['sentence_bleu']:.2f}, "
                  f"ROUGE-L {s['rouge_l']:.2f}, {t_dec:.1f} s decoding + {time.time() - t0 - t_dec:.1f} s MBR",
                  flush=True)
    out = a.out or os.path.join(ROOT, "bench", "decoding", f"{a.name}.json")
    write_json(out, "bench_decoding", model.device, dict(
        header=head, command=" ".join(sys.argv), model=model.path, split=a.split, examples=len(pairs),
        copy=copy, rows=rows, mbr=mbr))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
