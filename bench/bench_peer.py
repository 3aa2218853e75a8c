"""This toolkit beside the original DiffuSeq, at the original's own configuration, in one run.

The original runs through ../shared/peer (its code, patched only to run on CPU; set it up once
with `MIRROR=<bare clone> bash ../shared/peer/setup.sh`). Both codes get the same data
(qqp_small), the same frozen WordPiece vocabulary (7,080 entries), the same shape, batch 64,
seq_len 128, hidden_dim 128, 2,000 diffusion steps, sqrt schedule, loss-aware sampler, lr 1e-4
without warm-up, EMA 0.9999, dropout 0.1, seed 102, fp32, v2's flags (learned absorbing state,
discrete noise 0.5). Ours runs with its defaults otherwise, which are its fast paths: the
length head, padding-free training (each target + 8 [PAD]s, every batch padded only to its
longest row), decoding at the predicted length with inputs batched by length. Each job is a
whole process, pinned to the same cores (--cpus), one after the other, under /usr/bin/time.

Training: median seconds per step after warm-up (the original's TrainLoop.run_step as its
harness times it; ours from its log's steps/s over windows of steps, data and monitoring
included), examples/s, peak RSS. Ablation: ours' train_step with one speed-up after the other.
Decoding: both train a checkpoint for --ckpt_steps steps at that configuration (EMA rate
--ckpt_ema), then decode the first 128 qqp_small valid pairs with DPM-Solver++ (10 and 20 steps,
batch 64) from the EMA weights (the only ones the original saves); sentences/s (the original's
sampling calls alone; ours including tokenising and writing), process wall time, peak RSS, and
BLEU / ROUGE-L of each output scored alike by diffuseq.metrics.

    python bench/bench_peer.py                          # everything, pinned to core 1
    python bench/bench_peer.py --only train --presets tiny
    python bench/bench_peer.py --report bench/peer/peer.json   # print the tables of a saved run
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

import common
from common import header_lines, table
from diffuseq import recipes
from diffuseq.logs import read_curves
from diffuseq.metrics import evaluate

PEER = os.path.join(common.ROOT, "..", "shared", "peer")
DATA = os.path.join(common.ROOT, "..", "shared", "data", "qqp_small")
SHAPES = {"tiny": ["--width", "128", "--layers", "2", "--heads", "2", "--ffn", "512"],
          "base": ["--width", "768", "--layers", "12", "--heads", "12", "--ffn", "3072"]}
# (steps run, warm-up steps left out) of each training measurement; ours logs every `log` steps
TRAIN_STEPS = {"tiny": dict(peer=(60, 5), ours=100, log=20), "base": dict(peer=(5, 2), ours=8, log=2)}


def ours_config(data_dir, vocab, preset):
    """The original-v2 recipe at the peer's batch (64), shape and precision, with ours' default
    layout (length head, padding-free) and gradient clipping."""
    return ["--recipe", "original-v2"] + recipes.get("original-v2").flags(
        dataset="qqp", data_dir=data_dir, vocab_path=vocab, bsz=64, microbatch=64, precision="fp32",
        progress=False, eval_interval=0, length_head=True, length_margin=8, grad_clip=1.0) + SHAPES[preset]


def time_v(path):
    """Wall seconds and peak RSS (MB) from a /usr/bin/time -v report."""
    txt = open(path).read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt).group(1)) / 1024
    wall = 0.0
    for part in re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", txt).group(1).split(":"):
        wall = wall * 60 + float(part)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1)}


class Runner:
    def __init__(self, a):
        self.a, self.work = a, a.work
        os.makedirs(self.work, exist_ok=True)
        self.threads = str(len(expand_cpus(a.cpus)))

    def run(self, name, cmd, shell=False):
        """One pinned process under /usr/bin/time; returns (stdout+stderr, time -v figures)."""
        tv = os.path.join(self.work, f"{name}.time")
        full = ["taskset", "-c", self.a.cpus, "/usr/bin/time", "-v", "-o", tv]
        full += ["bash", "-c", cmd] if shell else cmd
        e = {**os.environ, "OMP_NUM_THREADS": self.threads, "MKL_NUM_THREADS": self.threads}
        if not shell:  # ours; the original's runs set their own path (its package is also "diffuseq")
            e["PYTHONPATH"] = common.ROOT
        print(f"  [{time.strftime('%H:%M:%S')}] {name}", flush=True)
        p = subprocess.run(full, cwd=common.ROOT, env=e, capture_output=True, text=True)
        out = p.stdout + p.stderr
        with open(os.path.join(self.work, f"{name}.log"), "w") as f:
            f.write(out)
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed ({p.returncode}):\n{out[-3000:]}")
        return out, time_v(tv)

    # ---------------------------------------------------------------- the original
    def peer(self, func, *args):
        quoted = " ".join(shlex.quote(str(x)) for x in args)
        return f"source {shlex.quote(os.path.join(self.a.peer, 'harness', 'common.sh'))} && {func} {quoted}"

    def peer_train(self, preset, steps, warm, ck, save=1000000):
        tj = os.path.join(self.work, f"peer_train_{preset}_{steps}.timing.json")
        log = os.path.join(self.work, f"peer_train_{preset}_{steps}.peerlog")
        _, tv = self.run(f"peer_train_{preset}_{steps}", self.peer(
            "peer_train", "v2", preset, steps, ck, "/tmp/peer-data/qqp_bench", tj, log, save), shell=True)
        st = json.load(open(tj))["step_times"][warm:]
        return {"s_per_step": statistics.median(st), "steps_timed": len(st), **tv,
                "command": open(log).readline().strip().lstrip("+ ")}

    def peer_checkpoint(self, steps, ema, ck):
        """The original trained for `steps` steps at the configuration of peer_train, with EMA
        rate `ema` (its --ema_rate flag): the harness's command plus that one flag."""
        cmd = self.peer("peer_config_dir", "tiny") + " >/dev/null"  # fails early if unset
        flags = ["--checkpoint_path", ck, "--dataset", "qqp", "--data_dir", "/tmp/peer-data/qqp_bench",
                 "--data_split_num", "0", "--vocab", "bert", "--use_plm_init", "no", "--lr", "0.0001",
                 "--use_fp16", "False", "--batch_size", "64", "--microbatch", "64", "--diffusion_steps", "2000",
                 "--noise_schedule", "sqrt", "--schedule_sampler", "lossaware", "--resume_checkpoint", "none",
                 "--seq_len", "128", "--hidden_t_dim", "128", "--seed", "102", "--hidden_dim", "128",
                 "--learning_steps", str(steps), "--save_interval", str(steps),
                 "--config_name", "/tmp/peer-data/bert-tiny-local", "--notes", "peer", "--learned_mean_embed",
                 "True", "--denoise", "True", "--denoise_rate", "0.5", "--reg_rate", "0.0", "--ema_rate", str(ema)]
        run = os.path.join(self.a.peer, "harness", "peer_run.py")
        cmd += (f" && rm -rf {shlex.quote(ck)} && mkdir -p {shlex.quote(ck)} && cd /tmp/peer-orig-v2 && "
                f"OPENAI_LOGDIR={shlex.quote(ck)} $PEER_PY {shlex.quote(run)} train.py {shlex.join(flags)}")
        _, tv = self.run(f"peer_ckpt_{steps}", cmd, shell=True)
        return {**tv, "command": "python train.py " + shlex.join(flags)}

    def peer_decode(self, ckpt, steps):
        name = f"peer_decode_dpm{steps}"
        out = os.path.join(self.work, name)
        subprocess.run(["rm", "-rf", out])
        tj = os.path.join(self.work, f"{name}.timing.json")
        log = os.path.join(self.work, f"{name}.peerlog")
        _, tv = self.run(name, self.peer("peer_decode_dpm", ckpt, steps, 64, 110, out, tj, log), shell=True)
        calls = json.load(open(tj))["sample_calls"]
        n, s = sum(c["n"] for c in calls), sum(c["s"] for c in calls)
        found = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs if f.endswith(".json")]
        rows = [json.loads(line) for line in open(found[0])]
        return {"sentences": n, "sent_per_s": n / s, "sent_per_s_process": n / tv["wall_s"], **tv,
                **score(rows), "command": open(log).readline().strip().lstrip("+ "), "outputs": rows}

    # ---------------------------------------------------------------- ours
    def ours_train(self, preset, steps, log_every, run, save=None, extra=(), name=None):
        cmd = [sys.executable, os.path.join(common.ROOT, "train.py"),
               *ours_config(self.a.data, self.a.vocab, preset), "--checkpoint_path", run,
               "--learning_steps", str(steps), "--log_interval", str(log_every),
               "--save_interval", str(save or 10 * steps), *extra]
        subprocess.run(["rm", "-rf", run])
        _, tv = self.run(name or f"ours_train_{preset}_{steps}", cmd)
        return {**log_timing(run), "steps_per_window": log_every, **tv, "command": "python " + shlex.join(cmd[1:])}

    def ours_decode(self, run, steps, variant="ours", extra=()):
        name = f"{variant}_decode_dpm{steps}"
        out_dir = os.path.join(self.work, name)
        subprocess.run(["rm", "-rf", out_dir])
        cmd = [sys.executable, os.path.join(common.ROOT, "run_decode_solver.py"), "--model_dir", run,
               "--data_dir", "/tmp/peer-data/qqp_bench", "--split", "test", "--step", str(steps),
               "--bsz", "64", "--seed", "110", "--out_dir", out_dir, "--progress", "false", *extra]
        out, tv = self.run(name, cmd)
        rate = float(re.search(r"([\d.]+) sentences/s", out).group(1))
        path = re.search(r"wrote (\S+)", out).group(1)
        rows = [json.loads(line) for line in open(path)]
        return {"sentences": len(rows), "sent_per_s": rate, "sent_per_s_process": len(rows) / tv["wall_s"], **tv,
                **score(rows), "command": "python " + shlex.join(cmd[1:]), "outputs": rows}


# where ours' factor comes from, one change at a time, at the original's configuration (tiny)
ABLATION = [
    ("the original's layout: every position to seq_len is target", ["--length_head", "false"], False),
    ("+ denormals flushed to zero", ["--length_head", "false"], True),
    ("+ padding-free: length head, target + 8 [PAD]s, batch padded to its longest", ["--pack", "false"], True),
    ("+ packed rows: several examples' kept positions share a row (default)", [], True),
    ("+ length bucketing (--bucket true)", ["--bucket", "true"], True),
]


def ablation_worker(a, variant):
    """In this process: time train_step of one ABLATION variant on the loader's batches."""
    import tempfile

    import torch

    from diffuseq.config import parse_train_args
    from diffuseq.trainer import Trainer
    _, flags, flush = ABLATION[variant]
    with tempfile.TemporaryDirectory() as run:
        args = parse_train_args(ours_config(a.data, a.vocab, a.ablation_preset) + flags + [
            "--checkpoint_path", os.path.join(run, "r"), "--learning_steps", "1000", "--log_interval", "100"])
        tr = Trainer(args)
        torch.set_flush_denormal(flush)
        batches = [tr.loader.batch_at(s) for s in range(a.ablation_steps + 5)]
        times = []
        for b in batches:
            t0 = time.perf_counter()
            tr.train_step(b)
            times.append(time.perf_counter() - t0)
        L = statistics.mean(b["input_ids"].shape[1] for b in batches)
    print(json.dumps({"s_per_step": statistics.median(times[5:]), "mean_L": L}))


# ours' decoded checkpoints: the defaults, and the original's layout (pads to seq_len as targets,
# no length head, decoding the whole sequence)
# the original-v2 recipe exactly as this toolkit trains it (its layout and objective, no length head,
# no clipping, the original's training rules), beside ours' fast defaults at the same batch
EXACT = ["--length_head", "false", "--length_margin", "-1", "--grad_clip", "0"]
OURS_DECODE = {"ours": [], "ours_exact": EXACT}
DECODE_SAMPLER = {"ours_exact": ["--sampler", "original-v2"]}  # the original's own solver, exactly
# the default checkpoint decoded otherwise: with the original's number of model calls (K, not
# K + 1), and in bf16 (the original autocasts its solver, to fp16 on a GPU; on a CPU its autocast
# does nothing, while ours runs bf16 where the CPU has bf16 instructions)
DECODE_FLAGS = {"ours_k_calls": ["--final_call", "false"], "ours_bf16": ["--precision", "bf16"]}
CODE_NAMES = {"peer": "original", "ours": "ours", "ours_padded": "ours, original's layout",
              "ours_exact": "ours, the original-v2 profile exactly",
              "ours_bucket": "ours, --bucket true", "ours_k_calls": "ours, K model calls (--final_call false)",
              "ours_bf16": "ours, --precision bf16"}


def log_timing(run):
    """Seconds per step from the run's curves.jsonl, from the first training record (the warm-up
    before it left out) to the last."""
    marks = [(r["time"], r["step"]) for r in read_curves(run) if "train" in r]
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return {"s_per_step": (t1 - t0) / (s1 - s0), "steps_timed": s1 - s0}


def expand_cpus(spec):
    cpus = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


SPECIAL = re.compile(r"\[(CLS|SEP|PAD|UNK|MASK)\]")


def score(rows):
    """Sentence BLEU, ROUGE-L and words of outputs against references, special tokens removed
    first (the original writes them into all three fields)."""
    rows = [{k: " ".join(SPECIAL.sub(" ", r[k]).split()) for k in ("recover", "reference")} for r in rows]
    s = evaluate([[r["recover"]] for r in rows], [r["reference"] for r in rows], mbr=False)
    words = statistics.mean(len(r["recover"].split()) for r in rows)
    return {"bleu": s["sentence_bleu"], "rouge_l": s["rouge_l"], "words": words}


def run_all(a):
    r = Runner(a)
    res = {"cpus": a.cpus, "threads": int(r.threads), "train": {}, "decode": {}}
    if "train" in a.only:
        for preset in a.presets:
            s = TRAIN_STEPS[preset]
            peer = r.peer_train(preset, *s["peer"], os.path.join(a.work, f"peer_ck_{preset}"))
            ours = r.ours_train(preset, s["ours"], s["log"], os.path.join(a.work, f"ours_run_{preset}"))
            bucket = r.ours_train(preset, s["ours"], s["log"], os.path.join(a.work, f"ours_run_{preset}_bucket"),
                                  extra=["--bucket", "true"], name=f"ours_bucket_train_{preset}")
            exact = r.ours_train(preset, s["ours"], s["log"], os.path.join(a.work, f"ours_run_{preset}_exact"),
                                 extra=EXACT, name=f"ours_exact_train_{preset}")
            res["train"][preset] = {"peer": peer, "ours_exact": exact, "ours": ours, "ours_bucket": bucket}
            print(train_table({preset: res["train"][preset]}), flush=True)
    if "ablation" in a.only:
        key = ablation_key(a.ablation_preset)
        res[key] = []
        for i, (name, flags, flush) in enumerate(ABLATION):
            if a.ablation_variants and i not in a.ablation_variants:
                continue
            out, _ = r.run(f"ours_ablation_{a.ablation_preset}_{i}", [
                sys.executable, os.path.abspath(__file__), "--ablation_worker", str(i),
                "--ablation_steps", str(a.ablation_steps), "--ablation_preset", a.ablation_preset])
            res[key].append({"variant": name, "flags": flags, "flush_denormals": flush,
                             **json.loads(out.strip().splitlines()[-1])})
        print(ablation_table(res[key], a.ablation_preset), flush=True)
    if "decode" in a.only:
        n, ema = a.ckpt_steps, a.ckpt_ema
        peer_ck = os.path.join(a.work, f"peer_ck_decode_{n}_ema{ema}")
        ck = os.path.join(peer_ck, f"ema_{ema}_{n:06d}.pt")  # the original saves EMA weights only
        if not os.path.isfile(ck):
            res["decode"]["peer_ckpt_train"] = r.peer_checkpoint(n, ema, peer_ck)
        runs = {}
        for variant, extra in OURS_DECODE.items():  # ours by default, and ours in the original's layout
            runs[variant] = os.path.join(a.work, f"ours_run_decode_{n}_ema{ema}_{variant}")
            if not os.path.isdir(os.path.join(runs[variant], f"ckpt_{n:07d}")):
                res["decode"][f"{variant}_ckpt_train"] = r.ours_train(
                    "tiny", n, max(1, n // 4), runs[variant], save=n, extra=["--ema_rate", str(ema), *extra])
        jobs = {"peer": lambda steps: r.peer_decode(ck, steps),
                **{v: (lambda steps, v=v: r.ours_decode(runs[v], steps, v, DECODE_SAMPLER.get(v, ()))) for v in runs},
                **{v: (lambda steps, v=v, f=f: r.ours_decode(runs["ours"], steps, v, f))
                   for v, f in DECODE_FLAGS.items()}}
        for steps in (10, 20):
            # a decoding run lasts seconds, so each is repeated, the codes taking turns, and the
            # run of median speed kept (with every run's speed beside it)
            got = {v: [] for v in jobs}
            for _ in range(a.decode_repeats):
                for v, job in jobs.items():
                    got[v].append(job(steps))
            res["decode"][f"dpm{steps}"] = {v: median_run(rs) for v, rs in got.items()}
        print(decode_table(res["decode"]), flush=True)
    return res


def train_table(train):
    rows = []
    for preset, d in train.items():
        p = d["peer"]
        for code, o in d.items():
            rows.append([preset, CODE_NAMES.get(code, code), o["s_per_step"], 64 / o["s_per_step"],
                         f"{p['s_per_step'] / o['s_per_step']:.2f}x", o["peak_rss_mb"],
                         f"{o['peak_rss_mb'] / p['peak_rss_mb']:.2f}"])
    return table(["shape", "code", "s/step", "examples/s", "vs original", "peak RSS MB", "RSS vs original"], rows)


def median_run(runs):
    """The run of median sentences/s, with every run's figure in sent_per_s_runs."""
    rates = [x["sent_per_s"] for x in runs]
    mid = sorted(runs, key=lambda x: x["sent_per_s"])[(len(runs) - 1) // 2]
    return {**mid, "sent_per_s_runs": rates}


def ablation_key(preset):
    """Where a record keeps the ablation of a shape ("ablation" for tiny, the default)."""
    return "ablation" if preset == "tiny" else f"ablation_{preset}"


def ablation_table(rows, preset="tiny"):
    first = rows[0]["s_per_step"]
    return table([f"ours, {preset}, batch 64", "s/step", "mean padded length", "vs first"],
                 [[r["variant"], r["s_per_step"], r["mean_L"], f"{first / r['s_per_step']:.2f}x"] for r in rows])


def decode_table(dec):
    rows = []
    for key, d in dec.items():
        if "peer" not in d:
            continue
        base = d["peer"]
        for code, o in d.items():
            if code == "outputs":
                continue
            runs = o.get("sent_per_s_runs", [o["sent_per_s"]])
            rows.append([key, CODE_NAMES.get(code, code), o["sent_per_s"], f"{min(runs):.3g}-{max(runs):.3g}",
                         f"{o['sent_per_s'] / base['sent_per_s']:.2f}x", o["wall_s"], o["peak_rss_mb"], o["bleu"],
                         o["rouge_l"], o["words"]])
    return table(["decoder", "code", "sent/s", "runs", "vs original", "process wall s", "peak RSS MB", "BLEU",
                  "ROUGE-L", "words"], rows)


def report(res):
    for run in res.get("runs", [res]):  # a merged file holds the runs its sections came from
        print(f"{run.get('header', '')}\n  bench_peer.py {' '.join(run.get('argv', []))}: {run['threads']} "
              "thread(s) in each process, one process at a time")
    if res.get("train"):
        print("\ntraining at the original's configuration (batch 64, seq_len 128, fp32)")
        print(train_table(res["train"]))
    for preset in ("tiny", "base"):
        if res.get(ablation_key(preset)):
            print("\nwhere ours' speed comes from (train_step alone, same batches)")
            print(ablation_table(res[ablation_key(preset)], preset))
    if res.get("decode"):
        print(f"\ndecoding the first 128 qqp_small valid pairs, batch 64, checkpoints of "
              f"{res.get('ckpt_steps')} training steps (EMA {res.get('ckpt_ema')})")
        print(decode_table(res["decode"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", default=PEER, help="the peer harness folder")
    p.add_argument("--data", default=DATA, help="qqp_small")
    p.add_argument("--vocab", default=None, help="the frozen vocab.txt (default: the peer's data/vocab.txt)")
    p.add_argument("--cpus", default="1", help="cores every process is pinned to (taskset -c)")
    p.add_argument("--only", nargs="+", default=["train", "ablation", "decode"],
                   choices=["train", "ablation", "decode"])
    p.add_argument("--ablation_steps", type=int, default=20, help="timed steps of each ablation variant")
    p.add_argument("--ablation_preset", choices=["tiny", "base"], default="tiny", help="shape of the ablation")
    p.add_argument("--ablation_variants", type=int, nargs="+", default=None,
                   help="numbers of the ablation rows to run (default: all; 2 3 compares --pack false and true)")
    p.add_argument("--ablation_worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=sorted(SHAPES))
    p.add_argument("--ckpt_steps", type=int, default=1000, help="training steps of the decoded checkpoints")
    p.add_argument("--decode_repeats", type=int, default=3,
                   help="decoding runs of each code and step count; the median's figures are kept")
    p.add_argument("--ckpt_ema", type=float, default=0.99,
                   help="EMA rate of the decoded checkpoints (0.9999 leaves a short run's EMA weights at "
                        "their initialisation; both codes decode EMA weights)")
    p.add_argument("--work", default="/tmp/bench_peer", help="scratch folder (runs, logs, outputs)")
    p.add_argument("--json", default=os.path.join(common.ROOT, "bench", "peer", "peer.json"))
    p.add_argument("--report", default=None, help="print the tables of a saved JSON and exit")
    p.add_argument("--merge", nargs="+", default=None,
                   help="merge the sections of these saved JSON files into --json (later files win)")
    a = p.parse_args()
    if a.merge:
        merged = {"runs": []}
        for path in a.merge:
            r = json.load(open(path))
            merged["runs"].append({k: r.get(k) for k in ("header", "cpus", "threads", "argv", "ckpt_steps", "ckpt_ema")})
            merged.update({k: v for k, v in r.items() if k in ("train", "ablation", "ablation_base", "decode") and v})
            if r.get("decode"):
                merged.update(ckpt_steps=r.get("ckpt_steps"), ckpt_ema=r.get("ckpt_ema"))
        with open(a.json, "w") as f:
            json.dump(merged, f, indent=1)
        report(merged)
        return
    if a.report:
        report(json.load(open(a.report)))
        return
    a.vocab = a.vocab or os.path.join(a.peer, "data", "vocab.txt")
    if a.ablation_worker is not None:
        return ablation_worker(a, a.ablation_worker)
    if not (os.path.isdir("/tmp/peer-orig-v2") and os.path.isdir("/tmp/peer-data/qqp_bench")):
        sys.exit("the original is not set up: MIRROR=<bare clone of Shark-NLP/DiffuSeq> bash "
                 f"{os.path.normpath(a.peer)}/setup.sh")
    header = header_lines("bench_peer", common.pick_device("cpu"), f"cores {a.cpus}")
    print(header, flush=True)
    res = run_all(a)
    res.update(header=header, ckpt_steps=a.ckpt_steps, ckpt_ema=a.ckpt_ema, argv=sys.argv[1:])
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print()
    report(res)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
