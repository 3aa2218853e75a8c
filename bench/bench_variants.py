"""What each decoding knob does on one trained run: step counts and length candidates (and any
setting of tune_decode's grids), from noise and from the source, scored on the choose pairs of
bench/splits.py (validation: where defaults are chosen), one seed each.

    python bench/bench_variants.py --model_dir RUN --data bible --name bible_default --threads 1

Rows: DPM-Solver++ from noise with 5, 10, 20 and 40 steps and with 3 length candidates; a source
start at --source_t (scaled to the model's T as the grids are) with 1, 2 and 4 steps and with 3
and 5 length candidates, with the source's length (--lengths source, what the source starts chose
on every data set). The record: bench/decoding/variants_<name>.json.
"""
import argparse
import os
import sys
import time

from common import ROOT, header_lines, write_json
from splits import load_split_pairs, score

import torch

from diffuseq.choice import describe
from diffuseq.decoding import load_model
from diffuseq.tuning import scaled


def variants(source_t):
    noise = dict(sampler="dpm", init="noise")
    source = dict(sampler="dpm", init="source", t_start=source_t, lengths="source")
    return ([dict(noise, steps=k) for k in (5, 10, 20, 40)] + [dict(noise, steps=10, length_beam=3)]
            + [dict(source, steps=k) for k in (1, 2, 4)]
            + [dict(source, steps=1, length_beam=k) for k in (3, 5)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--data", choices=["bible", "qqp", "iwslt"], required=True)
    p.add_argument("--source_t", type=int, default=50, help="t_start of the source rows, for T = 2000")
    p.add_argument("--bsz", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", required=True)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model_dir, "cpu")
    pairs = load_split_pairs(a.data, "choose")
    src = [s for s, _ in pairs]
    head = header_lines("bench_variants", model.device, f"{model.path}, {len(pairs)} choose pairs of {a.data}")
    print(head, flush=True)
    rows = []
    for settings in scaled(variants(a.source_t), model.args.diffusion_steps):
        t0 = time.time()
        out = model.generate(src, seed=0, bsz=a.bsz, use_saved=False, **settings)
        row = dict(settings=settings, decoder=describe(settings), seconds=round(time.time() - t0, 1),
                   **score(out, pairs), examples=out[:3])
        rows.append(row)
        print(f"{row['decoder']:<45} sentence BLEU {row['sentence_bleu']:6.2f}  ROUGE-L {row['rouge_l']:6.2f}"
              f"  {row['seconds']:6.1f} s", flush=True)
    copy = score(src, pairs)
    print(f"{'copy':<45} sentence BLEU {copy['sentence_bleu']:6.2f}  ROUGE-L {copy['rouge_l']:6.2f}")
    path = os.path.join(ROOT, "bench", "decoding", f"variants_{a.name}.json")
    write_json(path, "bench_variants", model.device, dict(
        header=head, command=" ".join(["python"] + sys.argv), model=model.path, data=a.data, rows=rows, copy=copy))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
