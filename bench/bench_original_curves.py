"""The original DiffuSeq-v2 and our original-v2 profile trained side by side from the same initial
weights, and the noise between two seeds of each, on qqp_small at the peer's tiny shape.

For each seed s, our Trainer builds the initial weights (seed s) and they are written under the
original's names (diffuseq.importer.export_original); the original's own train.py starts from them
(--resume_checkpoint) with its --seed s, and ours trains with --seed s. Both: 2 layers, width
128, 2 heads, FFN 512, hidden_dim 128, batch 64, fp32, learning rate --lr decaying linearly over
the run (the original's QQP run: 1e-4; at 1e-4 both sides still write empty outputs after 600
steps, so the record's run takes 1e-3), loss-aware timesteps, EMA 0.99 (0.9999 would leave a 1,000-step run at 90% its initial weights),
checkpoints every --save steps. Every checkpoint of both is then scored by one function: the
validation loss of the original's objective (ours, shown equal to theirs by bench_original.py) on
the 201 pairs of qqp_small valid with fixed timesteps and noise, and at the end the BLEU of
DiffuSeq-v2's own solver (10 steps, our implementation of it, shown equal too) on 200 pairs.

    export CURVES_WORK=/tmp/original-curves-1000
    taskset -c 0 python bench/bench_original_curves.py --side original --seed 1 --steps 1000 --save 200 --lr 1e-3 &
    taskset -c 1 python bench/bench_original_curves.py --side original --seed 2 --steps 1000 --save 200 --lr 1e-3
    ... then --side ours for both seeds, the same way
    python bench/bench_original_curves.py --score     # after the runs: bench/peer/original_curves.json

The record keeps the largest gap between the sides at each seed (keys ending in _diff) and
between the two seeds of each side (seed_noise_*), the run-to-run noise the gaps are read against.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import torch

import common
from bench_original import ORIGINAL, PEER, PEER_DATA, PEER_PY, peer_ready
from diffuseq.config import parse_train_args
from diffuseq.data.dataset import load_split, make_eval_batches
from diffuseq.diffusion import training_losses
from diffuseq.importer import export_original, import_original
from diffuseq.metrics import evaluate
from diffuseq.optim import EMA, ema_live_names
from diffuseq.pipeline import DiffuSeq
from diffuseq.trainer import Trainer

WORK = os.environ.get("CURVES_WORK", "/tmp/original-curves")
QQP = os.path.join(common.ROOT, "..", "shared", "data", "qqp_small")
VOCAB = os.path.join(PEER, "data", "vocab.txt")


def our_args(seed, steps, save, run, lr):
    return parse_train_args([
        "--recipe", "original-v2", "--data_dir", QQP, "--dataset", "qqp_small", "--vocab_path", VOCAB,
        "--width", "128", "--layers", "2", "--heads", "2", "--ffn", "512", "--bsz", "64", "--microbatch", "64",
        "--precision", "fp32", "--lr", str(lr), "--learning_steps", str(steps), "--save_interval", str(save),
        "--eval_interval", "0",
        "--ema_rate", "0.99", "--seed", str(seed), "--checkpoint_path", run, "--progress", "false"])


def run_name(side, seed, init_seed=None):
    """`<side>_s<seed>`, or `<side>_i<init>_s<seed>` for a run from another seed's initial weights."""
    return f"{side}_s{seed}" if init_seed in (None, seed) else f"{side}_i{init_seed}_s{seed}"


def initial_weights(seed, steps, save, lr):
    """Our Trainer's seed-s initial weights (the original's train.py starts from them too)."""
    return Trainer(our_args(seed, steps, save, os.path.join(WORK, f"init_s{seed}"), lr)).model.state_dict()


def train_ours(seed, steps, save, lr, init_seed=None):
    run = os.path.join(WORK, run_name("ours", seed, init_seed))
    t0 = time.time()
    tr = Trainer(our_args(seed, steps, save, run, lr))
    if init_seed not in (None, seed):  # another seed's weights, this seed's draws
        tr.model.load_state_dict(initial_weights(init_seed, steps, save, lr))
        tr.ema = tr.stepper.ema = EMA(tr.model.parameters(), tr.args.ema_rate, ema_live_names(tr.args))
    tr.train()
    return time.time() - t0


def train_original(seed, steps, save, lr, init_seed=None):
    run = os.path.join(WORK, run_name("original", seed, init_seed))
    os.makedirs(run, exist_ok=True)
    init = os.path.join(run, "init", "model000000.pt")
    os.makedirs(os.path.dirname(init), exist_ok=True)
    tr = Trainer(our_args(seed, steps, save, os.path.join(WORK, f"init_s{seed}"), lr))
    tr.model.load_state_dict(initial_weights(seed if init_seed is None else init_seed, steps, save, lr))
    torch.save(export_original(tr.model), init)
    args = ["--checkpoint_path", run, "--dataset", "qqp", "--data_dir", PEER_DATA, "--data_split_num", "0",
            "--vocab", "bert", "--use_plm_init", "no", "--lr", str(lr), "--use_fp16", "False", "--batch_size", "64",
            "--microbatch", "64", "--diffusion_steps", "2000", "--noise_schedule", "sqrt", "--schedule_sampler",
            "lossaware", "--resume_checkpoint", init, "--seq_len", "128", "--hidden_t_dim", "128", "--seed",
            str(seed), "--hidden_dim", "128", "--learning_steps", str(steps), "--save_interval", str(save),
            "--ema_rate", "0.99", "--config_name", "/tmp/peer-data/bert-tiny-local", "--notes", "curves",
            "--learned_mean_embed", "True", "--denoise", "True", "--denoise_rate", "0.5", "--reg_rate", "0.0"]
    env = {**os.environ, "OPENAI_LOGDIR": run, "PYTHONPATH": os.path.join(PEER, "harness", "stubs"),
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    t0 = time.time()
    with open(os.path.join(run, "train.out"), "w") as log:
        subprocess.run([PEER_PY, os.path.join(PEER, "harness", "peer_run.py"), "train.py", *args],
                       cwd=ORIGINAL["v2"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - t0


def checkpoints(side, seed, init_seed=None):
    """{step: a checkpoint folder of ours} for every saved step of one run (the original's
    imported)."""
    run = os.path.join(WORK, run_name(side, seed, init_seed))
    if side == "ours":
        return {int(os.path.basename(p)[5:]): p for p in glob.glob(os.path.join(run, "ckpt_*"))}
    out = {}
    for pt in sorted(glob.glob(os.path.join(run, "ema_0.99_*.pt"))):
        step = int(pt[-9:-3])
        out[step] = import_original(pt, os.path.join(run, "imported"), step)
    return out


@torch.no_grad()
def valid_loss(model, batches, seed=0):
    """The original objective's mean loss terms on fixed batches, timesteps and noise."""
    net, args = model.model, model.args
    g = torch.Generator().manual_seed(seed)
    sums, n = {}, 0
    for b in batches:
        ids, mask = b["input_ids"], b["input_mask"]
        B, L = ids.shape
        t = torch.randint(0, args.diffusion_steps, (B,), generator=g)
        noise = torch.randn(2, B, L, args.hidden_dim, generator=g)
        u = torch.rand(B, L, generator=g)
        terms = training_losses(net, model.sched, ids, mask, t, noise, u=u, denoise_rate=args.denoise_rate,
                                reg_rate=args.reg_rate, positions="all", m_reg="norm", monitor=False)
        for k in ("loss", "mse", "decoder_nll"):
            sums[k] = sums.get(k, 0.0) + float(terms[k].sum())
        n += B
    return {k: v / n for k, v in sums.items()}


def score(seeds, n_valid=201, n_bleu=200):
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in open(os.path.join(QQP, "valid.jsonl"))]
    rec = {"config": "qqp_small, tiny (2 x 128, 2 heads, FFN 512), D 128, batch 64, fp32, EMA 0.99",
           "runs": {}}
    for side in ("original", "ours"):
        for seed in seeds:
            cks = checkpoints(side, seed)
            if not cks:
                continue
            curve = {}
            for step, path in sorted(cks.items()):
                model = DiffuSeq.from_pretrained(path, "cpu")
                ds, _ = load_split(QQP, "valid", model.tokenizer, model.seq_len, layout=model.args.layout)
                batches = list(make_eval_batches(ds.select(range(min(n_valid, len(ds)))), 64, model.seq_len,
                                                 model.tokenizer.pad_id))
                curve[step] = valid_loss(model, batches)
            last = DiffuSeq.from_pretrained(cks[max(cks)], "cpu")
            src, ref = [r["src"] for r in rows[:n_bleu]], [r["trg"] for r in rows[:n_bleu]]
            hyp = last.generate(src, sampler="original-v2", steps=10, seed=seed, lengths="full", use_saved=False,
                                cleanup="original")
            scores = evaluate([[h] for h in hyp], ref, mbr=False)
            rec["runs"][f"{side}_s{seed}"] = {"valid": curve, "final_step": max(cks),
                                              "bleu_original_v2_10": scores["sentence_bleu"],
                                              "rouge_l": scores["rouge_l"], "examples": hyp[:5]}
    for k, v in rec["runs"].items():
        print(k, {s: round(c["loss"], 4) for s, c in v["valid"].items()}, "BLEU", round(v["bleu_original_v2_10"], 2))
    rec.update(compare_runs(rec["runs"], seeds))
    print({k: v for k, v in rec.items() if k.endswith("_diff") or k.startswith("seed_noise")})
    return rec


def valid_curve(side, seed, init_seed=None, n_valid=201):
    """{step: the original objective's validation loss} of every checkpoint of one run."""
    curve = {}
    for step, path in sorted(checkpoints(side, seed, init_seed).items()):
        model = DiffuSeq.from_pretrained(path, "cpu")
        ds, _ = load_split(QQP, "valid", model.tokenizer, model.seq_len, layout=model.args.layout)
        batches = list(make_eval_batches(ds.select(range(min(n_valid, len(ds)))), 64, model.seq_len,
                                         model.tokenizer.pad_id))
        curve[step] = valid_loss(model, batches)["loss"]
    return curve


def like_for_like(init_seed, seeds, recorded):
    """The run-to-run noise measured like for like: from the same initial weights (seed init_seed)
    with the draws of two seeds, on each side, against the gap between the sides from the same
    weights and draws. `recorded`: curves of runs kept in an earlier record ({name: {step: loss}}),
    used where a run's checkpoints are not here (the original's code has not changed since)."""
    curves = {}
    for side in ("original", "ours"):
        for seed in seeds:
            name = run_name(side, seed, init_seed)
            curve = valid_curve(side, seed, init_seed)
            curves[name] = curve or {int(k): v for k, v in recorded.get(name, {}).items()}
    out = {"curves": curves}

    def gap(a, b):
        steps = sorted(set(a) & set(b))
        return max(abs(a[s] - b[s]) for s in steps), steps
    base, other = seeds
    for side in ("original", "ours"):
        out[f"draw_noise_{side}_valid_loss"], out["steps"] = gap(curves[run_name(side, base, init_seed)],
                                                                 curves[run_name(side, other, init_seed)])
    out["valid_loss_same_draws_diff"], _ = gap(curves[run_name("original", base, init_seed)],
                                               curves[run_name("ours", base, init_seed)])
    return out


def compare_runs(runs, seeds):
    """The largest gaps: between the sides at each seed (keys ending in _diff), and between the two
    seeds of each side (the run-to-run noise they are read against)."""
    out = {}

    def gap(a, b):
        steps = set(a["valid"]) & set(b["valid"])
        return dict(valid_loss=max(abs(a["valid"][s]["loss"] - b["valid"][s]["loss"]) for s in steps),
                    bleu=abs(a["bleu_original_v2_10"] - b["bleu_original_v2_10"]))
    for seed in seeds:
        a, b = runs.get(f"original_s{seed}"), runs.get(f"ours_s{seed}")
        if a and b:
            for k, v in gap(a, b).items():
                out[f"{k}_s{seed}_diff"] = v
    if len(seeds) > 1:
        for side in ("original", "ours"):
            a, b = runs.get(f"{side}_s{seeds[0]}"), runs.get(f"{side}_s{seeds[1]}")
            if a and b:
                for k, v in gap(a, b).items():
                    out[f"seed_noise_{side}_{k}"] = v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=["ours", "original"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--save", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="peak learning rate of both sides (the original's QQP run: 1e-4)")
    p.add_argument("--score", action="store_true")
    p.add_argument("--init_seed", type=int, default=None,
                   help="start from this seed's initial weights, drawing with --seed (default: --seed's)")
    p.add_argument("--like_for_like", default=None, metavar="INIT,SEED",
                   help="score runs from INIT's weights with draws INIT and SEED on both sides (the noise that "
                        "check 3's gaps are read against); adds it to bench/peer/original_curves.json")
    p.add_argument("--seeds", default="1,2")
    a = p.parse_args(argv)
    why = peer_ready("v2")
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    os.makedirs(WORK, exist_ok=True)
    if a.like_for_like:
        init, other = (int(x) for x in a.like_for_like.split(","))
        path = os.path.join(common.ROOT, "bench", "peer", "original_curves.json")
        rec = json.load(open(path))
        recorded = {k: {s: c["loss"] for s, c in v["valid"].items()} for k, v in rec["runs"].items()}
        lfl = like_for_like(init, (init, other), recorded)
        lfl["command"] = "python bench/bench_original_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lfl["date"] = time.strftime("%Y-%m-%d")
        rec["like_for_like"] = lfl
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)
        print(json.dumps({k: v for k, v in lfl.items() if k != "curves"}, indent=1))
        return 0
    if a.score:
        rec = score([int(s) for s in a.seeds.split(",")])
        rec["command"] = "python bench/bench_original_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
        rec["date"] = time.strftime("%Y-%m-%d")
        with open(os.path.join(common.ROOT, "bench", "peer", "original_curves.json"), "w") as f:
            json.dump(rec, f, indent=1)
        return 0
    seconds = (train_ours if a.side == "ours" else train_original)(a.seed, a.steps, a.save, a.lr, a.init_seed)
    with open(os.path.join(WORK, run_name(a.side, a.seed, a.init_seed) + ".seconds"), "w") as f:
        f.write(f"{seconds:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
