"""Gather a GPU check's folder into summary.json and summary.md: the environment, which parts
passed, and the tables of the training, decoding and quality benchmarks.

    python bench/gpu_summary.py OUT
"""
import glob
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    fmt = lambda c: "" if c is None else f"{c:.3g}" if isinstance(c, float) else str(c)  # noqa: E731
    return "\n".join(lines + ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows])


def main(out):
    parts = [json.loads(line) for line in open(os.path.join(out, "parts.jsonl"))] \
        if os.path.isfile(os.path.join(out, "parts.jsonl")) else []
    env = load(os.path.join(out, "env.json")) or {}
    summary = {"env": env, "parts": parts, "train": [], "decode": [], "quality": None}
    md = [f"# GPU check: {env.get('device', '?')}", "",
          f"torch {env.get('torch')}, CUDA {env.get('cuda')}, driver {env.get('driver', '-')}; "
          f"measured {env.get('matmul_dtype')} matmul: {env.get('matmul_tflops', 0):.1f} TFLOP/s", "",
          md_table(["part", "status", "seconds"], [[p["part"], p["status"], p["seconds"]] for p in parts]), ""]
    rows = []
    for f in sorted(glob.glob(os.path.join(out, "train_*.json"))):
        r = load(f) or {}
        for x in r.get("results", []):
            x = dict(x, run=os.path.basename(f)[:-5], bsz=r.get("bsz"))
            summary["train"].append(x)
            prof = x.get("profile") or {}
            busy = f"{100 * prof['kernel_s'] / prof['wall_s']:.0f}%" if prof.get("kernel_s") else None
            rows.append([x["run"], x["preset"], x["precision"], x["impl"], x["bsz"], x["step_s"], x["y_tok_s"],
                         x["samples_s"], x.get("peak_mib"), None if x.get("mfu") is None else f"{100 * x['mfu']:.1f}%",
                         busy])
    if rows:
        md += ["## Training step", "", "GPU busy: the share of a profiled step's wall time spent in kernels.", "",
               md_table(["run", "preset", "precision", "impl", "batch", "s/step", "target tok/s", "samples/s",
                         "peak MiB", "MFU", "GPU busy"], rows), ""]
    rows = []
    for f in sorted(glob.glob(os.path.join(out, "decode_*.json"))):
        r = load(f) or {}
        for x in r.get("results", []):
            x = dict(x, run=os.path.basename(f)[:-5], preset=r.get("preset"), compile=r.get("compile"))
            summary["decode"].append(x)
            rows.append([x["run"], x["preset"], "yes" if x["compile"] else "no", x["sampler"], x["steps"], x["bsz"],
                         x["sent_s"]])
    if rows:
        md += ["## Decoding", "", md_table(["run", "preset", "compiled", "sampler", "K", "batch", "sent/s"], rows), ""]
    q = load(os.path.join(out, "quality_scores.json"))
    if q:
        summary["quality"] = q
        md += ["## Quality (Bible test split, the decoding chosen on valid)", "",
               md_table(["", "mean sentence BLEU", "corpus BLEU", "ROUGE-L", "avg len"],
                        [[k, v.get("sentence_bleu"), v.get("bleu"), v.get("rouge_l"), v.get("avg_len")]
                         for k, v in q.items() if isinstance(v, dict)]), ""]
    for proto, title in (("chosen", "the decoding chosen on valid"),
                         ("paper", "generation from noise: our DPM-Solver++ 10 without absorption")):
        q = load(os.path.join(out, f"quality_big_{proto}_scores.json"))
        if q:
            summary[f"quality_big_{proto}"] = q
            md += [f"## Quality of the larger model (Bible test split, {title})", "",
                   md_table(["", "mean sentence BLEU", "corpus BLEU", "ROUGE-L", "avg len"],
                            [[k, v.get("sentence_bleu"), v.get("bleu"), v.get("rouge_l"), v.get("avg_len")]
                             for k, v in q.items() if isinstance(v, dict)]), ""]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/gpu_summary.py OUT")
    sys.exit(main(sys.argv[1]))
