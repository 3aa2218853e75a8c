"""Score decoding outputs: BLEU, ROUGE-L, diversity, length (and BERTScore from a local model).

    diffuseq-eval generation_outputs/qqp/              # every seed in the folder
    diffuseq-eval test.seed101.step2000.jsonl --baseline --json scores.json
    diffuseq-eval generation_outputs/qqp/ --protocol original   # as DiffuSeq's own script scores

(`python scripts/eval_seq2seq.py ...` is the same command.)
"""

import argparse
import json
import sys
from pathlib import Path

from .metrics import MetricsError, evaluate, evaluate_original, load_original_outputs, load_outputs

# (key in evaluate's dict, label in the table, number format)
ROWS = [
    ("bleu", "BLEU (sacrebleu corpus)", "{:.2f}"),
    ("sentence_bleu", "BLEU (mean sentence, NLTK)", "{:.2f}"),
    ("rouge_l", "ROUGE-L F1", "{:.2f}"),
    ("bertscore", "BERTScore F1", "{:.2f}"),
    ("dist1", "Dist-1 (intra-sentence)", "{:.2f}"),
    ("avg_len", "Avg length (tokens)", "{:.2f}"),
    ("sentence_bleu_mean_candidate", "BLEU (sentence, mean cand.)", "{:.2f}"),
    ("self_bleu", "Self-BLEU (lower = diverse)", "{:.2f}"),
    ("div4", "Div-4", "{:.2f}"),
]


SPECIALS = ("[CLS]", "[SEP]", "[PAD]")


def original_clean(text):
    """The original scorer's clean-up: the special tokens deleted wherever they occur."""
    for tok in SPECIALS:
        text = text.replace(tok, "")
    return " ".join(text.split())


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Score the .jsonl files written by decoding (all scores on 0-100).\n\n"
                    "A folder's *.jsonl files are taken as candidates for the same inputs (one\n"
                    "file per decoding seed). One candidate per input is then picked by minimum\n"
                    "Bayes risk (MBR, BLEU as utility) and scored, and the diversity between the\n"
                    "candidates (Self-BLEU, Div-4) is reported too.",
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="a decoding .jsonl file, or a folder of them")
    p.add_argument("--folder", help="same as the positional path")
    p.add_argument("--mbr", action=argparse.BooleanOptionalAction, default=True,
                   help="with several files, score the MBR pick per input; --no-mbr scores the "
                        "first file's output (default: --mbr)")
    p.add_argument("--bertscore_model", metavar="PATH",
                   help="folder of a model saved on local disk (save_pretrained) for BERTScore; "
                        "needs the bert-score and transformers packages; nothing is downloaded")
    p.add_argument("--clean", choices=["none", "original"], default="none",
                   help="original: first delete [CLS], [SEP] and [PAD] wherever they occur in every text, as the "
                        "original's scorer does (to score the original's own output files, which keep them)")
    p.add_argument("--protocol", choices=["ours", "original"], default="ours",
                   help="original: score exactly as the original DiffuSeq's scripts/eval_seq2seq.py does, "
                        "on its 0-1 scale: its clean-up (implied; --clean is not used), each file on its own "
                        "against its \"reference\" field, and with several files Self-BLEU / Div-4 and "
                        "(unless --no-mbr) its MBR pick; a folder's files are its names ending in json, as "
                        "the original globs them, else its .jsonl files. "
                        "BERTScore (deberta-xlarge-mnli, layer 40) only from --bertscore_model or the "
                        "Hugging Face cache, else left out with a note (default: ours)")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers to this file")
    p.add_argument("--baseline", action="store_true",
                   help="also score copying the source (hypothesis = source) for comparison")
    args = p.parse_args(argv)
    if (args.path is None) == (args.folder is None):
        p.error("give exactly one path to score, positionally or as --folder")
    if args.protocol == "original" and args.baseline:
        p.error("--baseline is not part of the original protocol")
    return args


def format_table(columns):
    """columns: {header: scores dict}; one row per metric any column has, '-' where missing."""
    rows = [(label, fmt, key) for key, label, fmt in ROWS if any(key in c for c in columns.values())]
    width = max(len(label) for label, _, _ in rows)
    cells = [[fmt.format(c[key]) if key in c else "-" for c in columns.values()]
             for _, fmt, key in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    lines = ["  ".join(["metric".ljust(width)] + [h.rjust(w) for h, w in zip(columns, widths)])]
    lines.append("-" * len(lines[0]))
    for (label, _, _), row in zip(rows, cells):
        lines.append("  ".join([label.ljust(width)] + [v.rjust(w) for v, w in zip(row, widths)]))
    return "\n".join(lines)


ORIGINAL_ROWS = [("bleu", "BLEU"), ("rouge_l", "ROUGE-L"), ("bertscore", "BERTScore"), ("dist1", "Dist-1"),
                 ("avg_len", "Avg len")]


def main_original(args, path):
    """--protocol original: print (and with --json write) what the original's script reports."""
    try:
        files, notes = load_original_outputs(path)
        report = evaluate_original(files, mbr=args.mbr, bertscore_model=args.bertscore_model)
        report["notes"][:0] = notes
    except MetricsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [(s["file"], s) for s in report["files"]]
    if "mbr" in report:
        rows.append((f"MBR pick of {len(files)} files", report["mbr"]))
    keys = [(k, label) for k, label in ORIGINAL_ROWS if any(k in s for _, s in rows)]
    width = max(len(name) for name, _ in rows)
    print(f"{path}: {len(files[0][1])} inputs x {len(files)} file(s), scored as the original's "
          "scripts/eval_seq2seq.py (0-1; Avg len in tokens)\n")
    print("  ".join(["file".ljust(width)] + [label.rjust(9) for _, label in keys]))
    for name, s in rows:
        print("  ".join([name.ljust(width)] + [f"{s[k]:9.4f}" if k in s else "-".rjust(9) for k, _ in keys]))
    if "diversity" in report:
        d = report["diversity"]
        print(f"\nacross the files: Self-BLEU {d['self_bleu']:.4f}  Div-4 {d['div4']:.4f}")
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"path": str(path), "protocol": "original", **report},
                                              indent=2) + "\n")
    return 0


def main(argv=None):
    args = parse_args(argv)
    path = args.path or args.folder
    if args.protocol == "original":
        return main_original(args, path)
    try:
        sources, refs, candidates = load_outputs(path)
        if args.clean == "original":
            sources = [original_clean(x) for x in sources]
            refs = [None if r is None else original_clean(r) for r in refs]
            candidates = [[original_clean(c) for c in cs] for cs in candidates]
        scored = [i for i, r in enumerate(refs) if r is not None]
        if not scored:
            print(f"{path}: none of its {len(refs)} outputs has a reference (the inputs had no \"trg\"): "
                  "nothing to score", file=sys.stderr)
            return 0
        left_out = len(refs) - len(scored)
        if left_out:
            print(f"note: {left_out} of {len(refs)} outputs have no reference and are left out of the scores",
                  file=sys.stderr)
            sources, refs, candidates = ([x[i] for i in scored] for x in (sources, refs, candidates))
        m = len(candidates[0])
        mbr = args.mbr and m > 1
        columns = {"model": evaluate(candidates, refs, mbr=mbr,
                                     bertscore_model=args.bertscore_model)}
        if args.baseline:
            columns["copy source"] = evaluate([[s] for s in sources], refs, mbr=False,
                                              bertscore_model=args.bertscore_model)
    except MetricsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    selection = "MBR over candidates" if mbr else ("first file" if m > 1 else "single file")
    print(f"{path}: {len(refs)} inputs x {m} candidate(s), scored: {selection}\n")
    print(format_table(columns))
    if args.json:
        report = {"path": str(path), "num_inputs": len(refs), "num_without_reference": left_out,
                  "num_candidates": m,
                  "selection": "mbr" if mbr else "first", **columns}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
