"""Equal outputs from equal inputs: this toolkit's original-v1/original-v2 profiles against the
original DiffuSeq's own code (../shared/peer runs it on CPU; set it up once with
`MIRROR=<bare clone> bash ../shared/peer/setup.sh`).

A checkpoint the original trained (its tiny shape on qqp_small: 2 layers, width 128, 2 heads,
hidden_dim 128) is imported with `python -m diffuseq.checkpoint import-original`; then both codes
get the same inputs and the largest absolute differences are recorded:

  tokens     the pairs laid out as token ids and target masks (ours with --layout original,
             theirs by their data code): how many rows differ
  forward    the denoiser's prediction of z_0 from the same (z_t, t)
  losses     each loss term (mse, nll, loss) on the same batch, timesteps, Gaussian noise and
             Bernoulli draws (eval mode: no dropout)
  solver     DiffuSeq-v2's solver (`--sampler original-v2`) from the same starting noise: the
             final state, and the share of target tokens that agree
  ancestral  the papers' ancestral chain over all T steps (`--sampler original-v1`) with the same
             stream of random draws: the share of target tokens that agree

    python bench/bench_original.py                      # v2's 200-step checkpoint, every part
    python bench/bench_original.py --branch main        # DiffuSeq v1
    python bench/bench_original.py --train_steps 3 --parts tokens,forward,losses,solver   # quick
Writes the record (--json, default bench/peer/original_<branch>.json): every maximum absolute
difference under a key ending in `_diff`.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import common
from diffuseq.data.dataset import collate, load_split
from diffuseq.diffusion import training_losses
from diffuseq.importer import export_original, import_original
from diffuseq.pipeline import DiffuSeq
from diffuseq.samplers import original_v2_solve
from diffuseq.schedule import NoiseScheduleVP

PEER = os.path.normpath(os.path.join(common.ROOT, "..", "shared", "peer"))
PEER_PY = "/tmp/peer-venv/bin/python"
ORIGINAL = {"v2": "/tmp/peer-orig-v2", "main": "/tmp/peer-orig-main"}
PEER_DATA = "/tmp/peer-data/qqp_bench"
SIDE = os.path.join(common.ROOT, "bench", "peer_side.py")
PEER_CONFIG = {"tiny": "/tmp/peer-data/bert-tiny-local", "base": "/tmp/peer-data/bert-base-local"}


def peer_ready(branch="v2"):
    """Why the peer cannot run here (None when it can)."""
    for path in (PEER_PY, ORIGINAL[branch], os.path.join(PEER_DATA, "train.jsonl"),
                 os.path.join(PEER, "harness", "common.sh")):
        if not os.path.exists(path):
            return f"{path} is missing: run MIRROR=<bare clone of Shark-NLP/DiffuSeq> bash ../shared/peer/setup.sh"
    return None


def train_original(branch, steps, run_dir, log, preset="tiny"):
    """The original trains its tiny (or BERT-base) shape on qqp_small for `steps` steps (its own
    train.py, the peer's flags); returns its EMA checkpoint."""
    cmd = (f"source {PEER}/harness/common.sh && peer_train {branch} {preset} {steps} {run_dir} {PEER_DATA} "
           f"{run_dir}.timing.json {log} {steps}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    pt = os.path.join(run_dir, f"ema_0.9999_{steps:06d}.pt")
    if r.returncode or not os.path.isfile(pt):
        raise RuntimeError(f"the original's training failed (see {log}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return pt


def run_original(branch, pt, inputs, out, parts, steps, seed, data=None, autocast="fp32", gap_steps=100):
    env = {**os.environ, "PYTHONPATH": os.path.join(PEER, "harness", "stubs"), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([PEER_PY, SIDE, "--ckpt", pt, "--data", data or os.path.join(PEER_DATA, "valid.jsonl"),
                        "--inputs", inputs, "--out", out, "--parts", ",".join(parts), "--steps", str(steps),
                        "--seed", str(seed), "--autocast", autocast, "--gap_steps", str(gap_steps)],
                       cwd=ORIGINAL[branch], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the original's side failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return load_file(out)


def our_tokens(model, path, n, work):
    """The first n pairs of `path` as our training data code lays them out (the model's layout),
    padded to seq_len."""
    ds, _ = load_split(os.path.dirname(path), os.path.basename(path)[:-len(".jsonl")], model.tokenizer,
                       model.seq_len, cache_dir=os.path.join(work, "cache"), layout=model.args.layout)
    batch = collate([ds[i] for i in range(n)], model.seq_len, model.tokenizer.pad_id)
    return batch["input_ids"], batch["input_mask"]


def agree(a, b, mask):
    """Share of the target positions where two token tensors agree."""
    m = mask.bool()
    return float((a[m] == b[m]).float().mean())


def long_pairs(path, out, n, k=6):
    """n pairs each made of k consecutive pairs of `path` joined (source to source, target to
    target): longer than seq_len 128, so the layout must truncate them."""
    rows = [json.loads(line) for line in open(path)]
    with open(out, "w") as f:
        for i in range(n):
            part = [rows[(i * k + j) % len(rows)] for j in range(k)]
            f.write(json.dumps({"src": " ".join(r["src"] for r in part), "trg": " ".join(r["trg"] for r in part)})
                    + "\n")
    return out


@torch.no_grad()
def compare(branch="v2", pt=None, train_steps=200, n=64, parts=("tokens", "forward", "losses", "solver"),
            steps=10, seed=7, n_ancestral=4, work=None, preset="tiny", precision="fp32", gap_steps=100):
    work = work or tempfile.mkdtemp(prefix="original-")
    rec = {"branch": branch, "n": n, "parts": list(parts), "shape": preset, "precision": precision}
    if pt is None:
        t0 = time.time()
        pt = train_original(branch, train_steps, os.path.join(work, f"{branch}_{preset}"),
                            os.path.join(work, "train.log"), preset)
        rec["original_train_s"] = round(time.time() - t0, 1)
        rec["original_train_steps"] = train_steps
    rec["checkpoint"] = pt
    ours_dir = import_original(pt, os.path.join(work, "imported"))
    model = DiffuSeq.from_pretrained(ours_dir, "cpu")
    net, args = model.model, model.args
    rec["profile"] = args.recipe
    cfg = net.cfg
    rec["model"] = {"hidden_dim": cfg.hidden_dim, "width": cfg.width, "layers": cfg.layers, "heads": cfg.heads,
                    "projections": cfg.hidden_dim != cfg.width or not cfg.proj_when_needed}
    fp16 = precision == "fp16"
    amp = (lambda: torch.autocast("cpu", dtype=torch.float16)) if fp16 else contextlib.nullcontext
    if fp16:
        model.dtype = torch.float16  # the solver's denoiser calls under autocast, as the original's scripts

    # the inputs both sides get
    g = torch.Generator().manual_seed(seed)
    L, D, T = model.seq_len, args.hidden_dim, args.diffusion_steps
    t = torch.cat([torch.tensor([0, T - 1]), torch.randint(0, T, (n - 2,), generator=g)])
    inputs = {"t": t, "z": torch.randn(n, L, D, generator=g), "noise": torch.randn(2, n, L, D, generator=g),
              "u": torch.rand(n, L, generator=g)}
    save_file(inputs, os.path.join(work, "inputs.safetensors"))
    theirs = run_original(branch, pt, os.path.join(work, "inputs.safetensors"), os.path.join(work, "out.safetensors"),
                          [p for p in parts if p not in ("ancestral", "truncation", "gapped")], steps, seed,
                          autocast=precision)  # the chains run on fewer pairs
    ids, mask = theirs["input_ids"].long(), theirs["input_mask"].long()

    if "tokens" in parts:
        our_ids, our_mask = our_tokens(model, os.path.join(PEER_DATA, "valid.jsonl"), n, work)
        rec["tokens_rows_diff"] = int(((our_ids != ids) | (our_mask != mask)).any(1).sum())
    if "truncation" in parts:  # pairs longer than seq_len: both layouts cut them
        os.makedirs(os.path.join(work, "long"), exist_ok=True)
        path = long_pairs(os.path.join(PEER_DATA, "valid.jsonl"), os.path.join(work, "long", "valid.jsonl"), n)
        th_long = run_original(branch, pt, os.path.join(work, "inputs.safetensors"),
                               os.path.join(work, "out_long.safetensors"), ["tokens"], steps, seed, data=path)
        our_ids, our_mask = our_tokens(model, path, n, work)
        rec["truncation_rows"] = n
        rows = [json.loads(line) for line in open(path)]
        tok = model.tokenizer
        rec["truncation_rows_cut"] = sum(len(tok.encode(r["src"])) + len(tok.encode(r["trg"])) + 4 > model.seq_len
                                         for r in rows)  # pairs that did not fit whole
        rec["truncation_rows_diff"] = int(((our_ids != th_long["input_ids"].long())
                                           | (our_mask != th_long["input_mask"].long())).any(1).sum())
    if "forward" in parts:
        with amp():
            pred = net(inputs["z"], t).float()
        rec["forward_diff"] = float((pred - theirs["pred"]).abs().max())
        rec["forward_scale"] = float(theirs["pred"].abs().max())
    if "losses" in parts:
        with amp():
            terms = training_losses(net, model.sched, ids, mask, t, inputs["noise"], u=inputs["u"],
                                    denoise_rate=args.denoise_rate if args.denoise else 0.0, reg_rate=args.reg_rate,
                                    positions=args.loss_positions, m_reg=args.m_reg)
        for k in ("mse", "nll", "loss"):
            rec[f"loss_{k}_diff"] = float((terms[k] - theirs[f"loss_{k}"]).abs().max())
            rec[f"loss_{k}_mean"] = float(theirs[f"loss_{k}"].mean())
    if "solver" in parts:
        x_start = net.get_embeds(ids)
        noise = torch.randn(x_start.shape, generator=torch.Generator().manual_seed(seed))
        state, _ = original_v2_solve(model.denoiser(mask), NoiseScheduleVP(model.sched.alphas_cumprod), noise,
                                     x_start, mask, steps=steps)
        rec["solver_state_diff"] = float((state - theirs["solver_state"]).abs().max())
        ours = net.get_logits(state).argmax(-1)
        rec["solver_token_agreement"] = agree(ours, theirs["solver_tokens"], mask)
        via = model.sample_ids(ids, mask, "original-v2", steps, seed=seed, lengths="full")
        rec["solver_pipeline_token_agreement"] = agree(via, theirs["solver_tokens"], mask)
        rec["examples"] = [{"ours": a, "original": b} for a, b in zip(
            model.detokenize(via[:3], mask[:3], "original"), model.detokenize(theirs["solver_tokens"][:3], mask[:3],
                                                                              "original"))]
    if "ancestral" in parts:
        k = n_ancestral
        a_in = {kk: v[:k] for kk, v in inputs.items()} | {"noise": inputs["noise"][:, :k].contiguous()}
        save_file(a_in, os.path.join(work, "inputs_a.safetensors"))
        t0 = time.time()
        th_a = run_original(branch, pt, os.path.join(work, "inputs_a.safetensors"),
                            os.path.join(work, "out_a.safetensors"), ["ancestral"], steps, seed)
        rec["ancestral_original_s"] = round(time.time() - t0, 1)
        t0 = time.time()
        via = model.sample_ids(ids[:k], mask[:k], "original-v1", None, seed=seed, lengths="full")
        rec["ancestral_ours_s"] = round(time.time() - t0, 1)
        rec["ancestral_n"] = k
        rec["ancestral_token_agreement"] = agree(via, th_a["ancestral_tokens"], mask[:k])
    if "gapped" in parts:  # v1 only: the v1 code's --step below T
        k = n_ancestral
        t0 = time.time()
        th_g = run_original(branch, pt, os.path.join(work, "inputs.safetensors"), os.path.join(work, "out_g.safetensors"),
                            ["gapped"], steps, seed, gap_steps=gap_steps)
        rec["gapped_original_s"] = round(time.time() - t0, 1)
        via = model.sample_ids(ids, mask, "original-v1", gap_steps, seed=seed, lengths="full")
        rec["gapped_steps"] = gap_steps
        rec["gapped_token_agreement"] = agree(via, th_g["gapped_tokens"], mask)
    return rec


TRAIN_SIDE = os.path.join(common.ROOT, "bench", "peer_train_side.py")
TINY = dict(width=128, layers=2, heads=2, ffn=512)  # the peer's tiny shape (bert-tiny-local)


def train_config(branch, steps, bsz, microbatch, T, seed=102):
    """The settings both sides of the training comparison run with: the peer's tiny shape on
    the original recipes' objective, a small T so that the loss-aware sampler warms up within the
    steps and its weights take part, the learning rate decaying linearly to 0 at `steps`."""
    v2 = branch == "v2"
    return {"seed": seed, "microbatch": microbatch, "lr": 1e-4, "ema_rate": 0.9999, "learning_steps": steps,
            "bsz": bsz, "diffusion_steps": T, "original_args": {
                "seq_len": 128, "hidden_dim": 128, "hidden_t_dim": 128, "diffusion_steps": T,
                "noise_schedule": "sqrt", "vocab_size": 7080, "dropout": 0.1, "config_name": PEER_CONFIG["tiny"],
                "learned_mean_embed": v2, "denoise": v2, "denoise_rate": 0.5, "use_plm_init": "no",
                "predict_xstart": True, "rescale_timesteps": True, "learn_sigma": False, "use_kl": False,
                "timestep_respacing": "", "sigma_small": False}}


def our_trainer(branch, cfg, work):
    """Our Trainer with the original-v1/v2 profile at the configuration of train_config."""
    from diffuseq.config import parse_train_args
    from diffuseq.trainer import Trainer
    args = parse_train_args([
        "--recipe", "original-v2" if branch == "v2" else "original-v1", "--data_dir", os.path.dirname(PEER_DATA)
        + "/qqp_bench", "--dataset", "qqp", "--vocab_path", os.path.join(PEER, "data", "vocab.txt"),
        *sum([[f"--{k}", str(v)] for k, v in TINY.items()], []), "--bsz", str(cfg["bsz"]),
        "--microbatch", str(cfg["microbatch"]), "--diffusion_steps", str(cfg["diffusion_steps"]),
        "--learning_steps", str(cfg["learning_steps"]), "--lr", str(cfg["lr"]), "--ema_rate", str(cfg["ema_rate"]),
        "--precision", "fp32", "--seed", str(cfg["seed"]), "--eval_interval", "0", "--progress", "false",
        "--checkpoint_path", os.path.join(work, f"ours_{branch}")])
    return Trainer(args)


@torch.no_grad()
def _state(sd, prefix=""):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def compare_training(branch="v2", steps=20, bsz=16, microbatch=4, T=8, work=None):
    """`steps` optimiser steps of both codes from the same initial weights on the same batches,
    ours replaying every draw the original made (timesteps, noise, Bernoulli draws; dropout off on
    both sides, eval mode): the largest differences of the sampler's importance weights, of each
    example's loss, of the weights and of the EMA weights at the end (dropout would draw from
    streams the two codes cannot share)."""
    from diffuseq.importer import convert_state
    from diffuseq.objective import Draws
    from diffuseq.optim import EMA, build_optimizer, ema_live_names
    work = work or tempfile.mkdtemp(prefix="original-train-")
    cfg = train_config(branch, steps, bsz, microbatch, T)
    tr = our_trainer(branch, cfg, work)
    model, args = tr.model, tr.args
    # the initial weights both start from: ours, under the original's names
    init = export_original(model)
    save_file({k: v.contiguous().clone() for k, v in init.items()}, os.path.join(work, "init.safetensors"))
    batches = [tr.loader.batch_at(s) for s in range(steps)]
    save_file({"input_ids": torch.stack([b["input_ids"] for b in batches]).int(),
               "input_mask": torch.stack([b["input_mask"] for b in batches]).int()},
              os.path.join(work, "batches.safetensors"))
    with open(os.path.join(work, "config.json"), "w") as f:
        json.dump(cfg, f)
    env = {**os.environ, "PYTHONPATH": os.path.join(PEER, "harness", "stubs"), "TOKENIZERS_PARALLELISM": "false"}
    out = os.path.join(work, "theirs.safetensors")
    r = subprocess.run([PEER_PY, TRAIN_SIDE, "--init", os.path.join(work, "init.safetensors"), "--batches",
                        os.path.join(work, "batches.safetensors"), "--config", os.path.join(work, "config.json"),
                        "--out", out], cwd=ORIGINAL[branch], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the original's training side failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    theirs = load_file(out)

    # ours: fresh optimiser and EMA at the initial weights, the original's draws replayed
    tr.ema = EMA(model.parameters(), args.ema_rate, ema_live_names(args))
    tr.opt = build_optimizer(model, args, torch.device("cpu"))
    tr.stepper.ema, tr.stepper.opt = tr.ema, tr.opt
    model.eval()
    sampler, ours_w, ours_loss = tr.sampler, [], []
    step_of = {"s": 0}

    def draw(step, ids, mask, keep=None, sampler=None, index=None, seed=None):
        s = step_of["s"]
        n = ids.shape[0]
        return Draws(torch.zeros(n, dtype=torch.long), torch.ones(n), torch.stack([theirs["noise0"][s],
                     theirs["noise1"][s]]), theirs["u"][s], torch.zeros(n))

    def sample(n, generator, device="cpu"):
        s, i = step_of["s"], step_of["i"]
        step_of["i"] += 1
        t = theirs["t"][s, i].long()
        p = torch.as_tensor(sampler.probs(), dtype=torch.float64)
        w = (1.0 / (len(p) * p[t])).float()
        ours_w.append(w)
        return t, w

    losses = tr.objective.losses

    def kept(*a, **k):
        terms = losses(*a, **k)
        ours_loss.append(terms["loss"].detach().float())
        return terms

    tr.objective.draw, sampler.sample, tr.objective.losses = draw, sample, kept
    t0 = time.time()
    for s in range(steps):
        step_of.update(s=s, i=0)
        b = dict(batches[s], index=torch.arange(bsz))
        tr.stepper(b, s)
    rec = {"train_steps": steps, "train_bsz": bsz, "train_microbatch": microbatch, "train_T": T,
           "train_ours_s": round(time.time() - t0, 1), "train_profile": args.recipe,
           "train_sampler_warm_at_end": bool(sampler.warmed_up())}
    rec["train_sampler_weight_diff"] = float((torch.stack(ours_w).view_as(theirs["w"]) - theirs["w"]).abs().max())
    rec["train_sampler_weight_spread"] = float(theirs["w"].max() - theirs["w"].min())
    rec["train_loss_diff"] = float((torch.cat(ours_loss).view_as(theirs["loss"]) - theirs["loss"]).abs().max())
    rec["train_sampler_history_diff"] = float(np.abs(sampler.loss_history - theirs["loss_history"].numpy()).max())
    final = convert_state(_state(theirs, "final."), model.cfg.seq_len, args.learned_mean_embed)
    ema = convert_state(_state(theirs, "ema."), model.cfg.seq_len, args.learned_mean_embed)
    ours_ema = tr.ema.state_dict(model)
    rec["train_weights_diff"] = max(float((model.state_dict()[k] - v).abs().max()) for k, v in final.items())
    rec["train_ema_diff"] = max(float((ours_ema[k] - v).abs().max()) for k, v in ema.items())
    # what --ema_embedding live changes: the averaged embedding is as far from the original's file as this
    averaged = tr.ema.shadow_of(model).get("word_embedding.weight")
    if averaged is not None:
        rec["train_ema_averaged_embedding_gap"] = float((averaged - ema["word_embedding.weight"]).abs().max())
    rec["train_weights_moved"] = max(float((model.state_dict()[k] - convert_state(init, model.cfg.seq_len,
                                     args.learned_mean_embed)[k]).abs().max()) for k in final)
    return rec


def record_name(branch, parts, preset, precision):
    """bench/peer/original_<branch>[_base][_fp16].json; original_train_steps.json for the training part."""
    if parts == ["train"]:
        return "original_train_steps.json"
    return f"original_{branch}" + ("_base" if preset == "base" else "") + ("_fp16" if precision == "fp16" else "") \
        + ".json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--branch", choices=["v2", "main"], default="v2")
    p.add_argument("--checkpoint", help="an ema_*.pt the original trained (default: train one)")
    p.add_argument("--train_steps", type=int, default=200, help="steps the original trains the compared checkpoint")
    p.add_argument("--shape", choices=["tiny", "base"], default="tiny",
                   help="tiny: 2 x 128, D = 128 (no projections); base: BERT-base, 12 x 768 with D = 128 and the "
                        "up and down projections (the papers' recipes)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: forward, losses and solver under fp16 autocast on both sides (v2 trains and decodes so)")
    p.add_argument("--n", type=int, default=64, help="pairs of qqp_small valid")
    p.add_argument("--parts", default="tokens,truncation,forward,losses,solver,ancestral",
                   help="of tokens, truncation, forward, losses, solver, ancestral, gapped; or train alone (20 "
                        "optimiser steps of both codes, v1 and v2: original_train_steps.json)")
    p.add_argument("--steps", type=int, default=10, help="solver steps")
    p.add_argument("--n_ancestral", type=int, default=32, help="pairs decoded by the 2,000-step chain")
    p.add_argument("--gap_steps", type=int, default=100, help="gapped: the v1 code's --step below T")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--json", help="record (default bench/peer/" + record_name("<branch>", [], "[base]", "[fp16]") + ")")
    a = p.parse_args(argv)
    why = peer_ready(a.branch)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    parts = a.parts.split(",")
    if parts == ["train"]:
        rec = {"v1": compare_training("main"), "v2": compare_training("v2")}
        for branch in ("v1", "v2"):
            rec.update({f"{branch}_{k}": v for k, v in rec.pop(branch).items()})
    else:
        if a.branch == "main" and "solver" in parts:
            parts.remove("solver")  # v1 has no solver
        if a.branch == "v2" and "gapped" in parts:
            parts.remove("gapped")  # v2's code has no shorter chain
        rec = compare(a.branch, a.checkpoint, a.train_steps, a.n, parts, a.steps, a.seed, a.n_ancestral,
                      work=a.work, preset=a.shape, precision=a.precision, gap_steps=a.gap_steps)
    rec["command"] = "python bench/bench_original.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rec["date"] = time.strftime("%Y-%m-%d")
    out = a.json or os.path.join(common.ROOT, "bench", "peer", record_name(a.branch, parts, a.shape, a.precision))
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
