"""The command line of checkpoint folders (`python -m diffuseq.checkpoint`, `diffuseq-checkpoint`):
convert older checkpoints, import the original code's runs. Kept apart from checkpoint.py, which
the importer itself builds on."""
import argparse
import os
import sys

from .checkpoint import CKPT_RE, CheckpointError, convert, list_checkpoints
from .importer import import_original


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m diffuseq.checkpoint" if __name__ == "__main__" else None,  # else diffuseq-checkpoint
        description="convert: rewrite checkpoints written by older versions (model.pt, ema.pt, "
                    "training_state.pt) as safetensors + JSON. import-original: turn a run folder of the "
                    "original DiffuSeq or DiffuSeq-v2 (ema_<rate>_<step>.pt, training_args.json, vocab.txt) into "
                    "one of ours with the matching original-v1/original-v2 profile, ready for every decoder. "
                    ".pt files are read with torch's restricted unpickler, which refuses files that would run code.")
    p.add_argument("command", choices=["convert", "import-original"], help="what to do")
    p.add_argument("folders", nargs="+", help="convert: checkpoint folders (ckpt_NNNNNNN) or run folders (all their "
                   "checkpoints); import-original: the original's run folder (or one of its .pt files)")
    p.add_argument("--out", help="import-original: the run folder to write (default: "
                   "diffusion_models/<its name>_imported)")
    p.add_argument("--step", type=int, help="import-original: the step to import (default: the newest)")
    p.add_argument("--heads", type=int, help="import-original: attention heads, when no BERT config.json tells "
                   "(default: width / 64)")
    p.add_argument("--processes", type=int, help="import-original: how many processes trained the run (its "
                   "batch_size is per process; our --bsz is global). Default: 4 for a v1 run of per-process batch "
                   "2,048 and 2 for a v2 run of 425, as the original's train scripts launch them, else 1")
    args = p.parse_args(argv)
    if args.command == "import-original":
        if len(args.folders) != 1:
            p.error("import-original takes one run folder")
        try:
            path = import_original(args.folders[0], args.out, args.step, args.heads, args.processes)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.folders[0]} -> {path}")
        return 0
    status = 0
    for folder in args.folders:
        targets = [folder] if CKPT_RE.match(os.path.basename(os.path.normpath(folder))) else list_checkpoints(folder)
        if not targets:
            print(f"error: {folder}: no checkpoint folder here", file=sys.stderr)
            status = 2
        for t in targets:
            try:
                done = convert(t)
            except CheckpointError as e:
                print(f"error: {e}", file=sys.stderr)
                status = 2
                continue
            print(f"{t}: {'converted ' + ', '.join(done) if done else 'nothing to convert'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
