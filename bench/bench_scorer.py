"""The same numbers from the same files: `diffuseq-eval --protocol original` against the original
DiffuSeq's own scorer, scripts/eval_seq2seq.py (../shared/peer runs it; set it up once with
`bash ../shared/peer/setup.sh`).

Decoding outputs are written in the original's format (one "source" / "reference" / "recover"
line per input, with [CLS] / [SEP] / [PAD] left in) from pairs of qqp_small valid, each "recover"
a perturbed reference: words dropped, replaced, repeated or swapped, capitals, punctuation glued
on or spaced off, accents, special tokens inside and around it, stray spaces and tabs, empty
outputs. Three folders: one file; four sample files (some inputs with equal samples, some with
samples that share no word, so that the MBR pick meets ties); three files, the last one shorter. The original's script scores each folder
without and with --mbr, ours likewise, and the largest absolute differences are recorded:

  bleu, rouge_l, dist1, avg_len   each file's scores
  self_bleu, div4                 the diversity across a folder's files
  mbr_bleu, mbr_rouge_l, mbr_dist1  the scores of the MBR picks

The original's BERTScore needs microsoft/deberta-xlarge-mnli from the hub, so it runs under a
wrapper that replaces only bert_score.score (by zeros; its number is not compared) and the
sentence splitter of torchmetrics' ROUGE-Lsum (which needs NLTK data from the internet, and is
computed but never read by the script). Its file is run as it is.

    python bench/bench_scorer.py                 # 200 inputs, writes bench/peer/original_scorer.json
    python bench/bench_scorer.py --n 40 --json /tmp/s.json
"""
import argparse
import contextlib
import glob
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import common
import bench_original
from diffuseq.evaluate import main as eval_main

SCRIPT = os.path.join(bench_original.ORIGINAL["main"], "scripts", "eval_seq2seq.py")
VALID = os.path.normpath(os.path.join(common.ROOT, "..", "shared", "data", "qqp_small", "valid.jsonl"))

WRAPPER = r'''
import json, runpy, sys
import bert_score, torch
import torchmetrics.functional.text.rouge as tm_rouge

def no_bertscore(cands, refs, **kwargs):
    zeros = torch.zeros(len(cands))
    return zeros, zeros, zeros

bert_score.score = no_bertscore
tm_rouge._split_sentence = lambda text: [text]
script, jobs = sys.argv[1], json.loads(sys.argv[2])
for i, (folder, mbr) in enumerate(jobs):
    print(f"=== job {i}", flush=True)
    sys.argv = [script, "--folder", folder] + (["--mbr"] if mbr else [])
    runpy.run_path(script, run_name="__main__")
'''

NAMES = {"BLEU": "bleu", "ROUGE-L": "rouge_l", "ROUGE-l": "rouge_l", "dist1": "dist1", "selfBleu": "self_bleu",
         "div4": "div4"}


def peer_ready():
    """Why the original's scorer cannot run here (None when it can)."""
    why = bench_original.peer_ready("main")
    if why:
        return why
    if not os.path.isfile(SCRIPT):
        return f"{SCRIPT} is missing: run bash ../shared/peer/setup.sh"
    site = glob.glob(os.path.join(os.path.dirname(os.path.dirname(bench_original.PEER_PY)), "lib", "python*",
                                  "site-packages"))
    for pkg in ("torchmetrics", "bert_score", "nltk"):
        if not any(os.path.isdir(os.path.join(s, pkg)) for s in site):
            return f"{bench_original.PEER_PY} has no {pkg}: run bash ../shared/peer/setup.sh"
    return None


# --------------------------------------------------------------------------------- outputs

def _perturb(text, vocab, rng):
    """One decoded-looking output near `text` (lowercased words, punctuation spaced off)."""
    r = rng.random()
    if r < 0.05:
        return ""
    if r < 0.08:
        return rng.choice(["[PAD] [PAD] [PAD]", "[SEP]", "[CLS] [SEP] [PAD]"])
    words = []
    for w in text.split():
        u = rng.random()
        if u < 0.12:
            continue
        if u < 0.22:
            w = rng.choice(vocab)
        elif u < 0.27:
            words.append(w)
        elif u < 0.31:
            w = w.capitalize()
        elif u < 0.33:
            w = rng.choice(["café", "naïve", "résumé", "über"])
        elif u < 0.37:
            w = w + rng.choice(["?", ",", "'s", "-"])
        elif u < 0.41:
            w = rng.choice(["[UNK]", "[PAD]", "[SEP]", "[CLS]"]) + " " + w
        words.append(w)
    for _ in range(rng.randrange(3)):
        if len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    out = " ".join(words)
    if rng.random() < 0.05:
        out = out.replace(" ", "  ", 1)
    if rng.random() < 0.02:
        out = out.replace(" ", "\t", 1)
    if rng.random() < 0.5:
        out = "[CLS] " + out
    if rng.random() < 0.6:
        out += " [SEP]" + " [PAD]" * rng.randrange(4)
    if rng.random() < 0.1:
        out = out.replace(" ", "[PAD]", 1)  # a special token glued to a word
    return out


def _spaced(text):
    """What BERT's decode writes: lowercase, punctuation a word of its own (mostly)."""
    text = text.lower()
    for p in "?,.!":
        text = text.replace(p, " " + p)
    return " ".join(text.split())


def make_outputs(root, n=200, seed=0):
    """Three folders of decoding outputs in the original's format under `root`; returns the
    (folder, mbr) pairs the comparison scores."""
    with open(VALID) as f:
        pairs = [json.loads(line) for line in f][:n]
    if len(pairs) < n:
        raise SystemExit(f"{VALID} holds {len(pairs)} pairs, fewer than --n {n}")
    rng = random.Random(seed)
    vocab = sorted({w for p in pairs for w in _spaced(p["trg"]).split()})
    rows = []
    for i, p in enumerate(pairs):
        ref = _spaced(p["trg"]) + " [SEP]"
        if i % 50 == 7:
            ref = "[SEP]"  # an empty target
        elif i % 50 == 13:
            ref = ref.replace(" ", " [PAD] ", 1)  # the original keeps [PAD] in references
        rows.append({"source": "[CLS] " + _spaced(p["src"]) + " [SEP]", "reference": ref, "trg": _spaced(p["trg"])})
    same = {i for i in range(n) if rng.random() < 0.15}  # inputs whose samples are all equal
    apart = {i for i in range(n) if rng.random() < 0.05} - same  # ... or share no word: an MBR tie

    def write(folder, name, k, m):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            for i, row in enumerate(rows[:m]):
                r = random.Random(f"{seed}-{i}" if i in same else f"{seed}-{i}-{k}")
                hyp = _perturb(row["trg"], vocab, r)
                if i in apart:
                    hyp = " ".join(vocab[(i * 7 + k * 3) % (len(vocab) - 3):][:3])
                rec = {"recover": hyp, "reference": row["reference"],
                       "source": row["source"]}
                f.write(json.dumps(rec) + "\n")

    single, samples, ragged = (os.path.join(root, d) for d in ("single", "samples", "ragged"))
    write(single, "seed101_step2000.json", 0, n)
    for k in range(4):
        write(samples, f"seed{101 + k}_step2000.json", k, n)
    for k in range(3):
        write(ragged, f"seed{201 + k}_step2000.json", 10 + k, n - 7 if k == 2 else n)
    return [(single, False), (samples, False), (samples, True), (ragged, False), (ragged, True)]


# --------------------------------------------------------------------------------- the two scorers

def run_original(jobs):
    """The original's printed numbers, one dict per job: files (name -> scores), diversity, mbr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([bench_original.PEER_PY, "-c", WRAPPER, SCRIPT, json.dumps(jobs)],
                       cwd=os.path.dirname(SCRIPT), env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the original's scorer failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    out, block = [], None
    for line in r.stdout.splitlines():
        if line.startswith("=== job"):
            out.append({"files": {}})
        elif line.endswith("json") and os.path.isfile(line):
            block = out[-1]["files"].setdefault(os.path.basename(line), {})
        elif line == "Compute diversity...":
            block = out[-1].setdefault("diversity", {})
        elif line == "MBR...":
            block = out[-1].setdefault("mbr", {})
        elif line.startswith("avg len "):
            block["avg_len"] = float(line.split()[-1])
        elif line.startswith("avg ") and line.split()[1] in NAMES:
            block[NAMES[line.split()[1]]] = float(line.split()[-1])
    return out


def run_ours(jobs, work):
    out = []
    for i, (folder, mbr) in enumerate(jobs):
        path = os.path.join(work, f"ours_{i}.json")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            rc = eval_main([folder, "--protocol", "original", "--mbr" if mbr else "--no-mbr", "--json", path])
        if rc:
            raise RuntimeError(f"our scorer failed on {folder}:\n{printed.getvalue()}")
        with open(path) as f:
            rep = json.load(f)
        out.append({"files": {s["file"]: s for s in rep["files"]},
                    **{k: rep[k] for k in ("diversity", "mbr") if k in rep}})
    return out


def compare(n=200, seed=0, work=None):
    """Score the same outputs with both; the record of the largest absolute differences."""
    work = work or tempfile.mkdtemp(prefix="bench_scorer_")
    jobs = make_outputs(os.path.join(work, "outputs"), n, seed)
    t0 = time.time()
    theirs = run_original(jobs)
    t_theirs = time.time() - t0
    t0 = time.time()
    ours = run_ours(jobs, work)
    t_ours = time.time() - t0
    if len(theirs) != len(jobs):
        raise RuntimeError(f"the original's scorer reported {len(theirs)} of {len(jobs)} jobs")
    diffs, missing, values = {}, [], []
    for (folder, mbr), th, us in zip(jobs, theirs, ours):
        pairs = [(f"files/{name}/{k}", k, v, us["files"].get(name, {}).get(k))
                 for name, sc in th["files"].items() for k, v in sc.items()]
        for part in ("diversity", "mbr"):
            prefix = "mbr_" if part == "mbr" else ""
            pairs += [(f"{part}/{k}", prefix + k, v, us.get(part, {}).get(k)) for k, v in th.get(part, {}).items()]
        if set(th["files"]) != set(us["files"]) or not set(th) <= set(us):
            missing.append(f"{folder} mbr={mbr}: files or parts differ")
        for where, key, v, w in pairs:
            if w is None:
                missing.append(f"{folder} mbr={mbr}: {where} not in ours")
                continue
            diffs[f"{key}_diff"] = max(diffs.get(f"{key}_diff", 0.0), abs(v - w))
        values.append({"folder": os.path.basename(folder), "mbr": mbr, "original": th})
    return {"n": n, "seed": seed, "jobs": len(jobs),
            "files": sum(len(th["files"]) for th in theirs),
            "original_script": os.path.relpath(SCRIPT, bench_original.ORIGINAL["main"]),
            "original_commit": open(os.path.join(bench_original.ORIGINAL["main"], ".peer-commit")).read().strip(),
            "bertscore": "not compared: the original's (deberta-xlarge-mnli from the hub) is replaced by zeros",
            **dict(sorted(diffs.items())), "missing": missing,
            "original_s": round(t_theirs, 1), "ours_s": round(t_ours, 1), "values": values}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="inputs, the first pairs of qqp_small valid")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    p.add_argument("--json", help="record (default bench/peer/original_scorer.json)")
    a = p.parse_args(argv)
    why = peer_ready()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    rec = compare(a.n, a.seed)
    rec["command"] = " ".join(["python bench/bench_scorer.py", *(argv if argv is not None else sys.argv[1:])])
    rec["date"] = time.strftime("%Y-%m-%d")
    out = a.json or os.path.join(common.ROOT, "bench", "peer", "original_scorer.json")
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps({k: v for k, v in rec.items() if k != "values"}, indent=1))
    return 0 if not rec["missing"] else 1


if __name__ == "__main__":
    sys.exit(main())
