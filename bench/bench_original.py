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
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

import common
from diffuseq.data.dataset import collate, load_split
from diffuseq.diffusion import training_losses
from diffuseq.importer import import_original
from diffuseq.pipeline import DiffuSeq
from diffuseq.samplers import original_v2_solve
from diffuseq.schedule import NoiseScheduleVP

PEER = os.path.normpath(os.path.join(common.ROOT, "..", "shared", "peer"))
PEER_PY = "/tmp/peer-venv/bin/python"
ORIGINAL = {"v2": "/tmp/peer-orig-v2", "main": "/tmp/peer-orig-main"}
PEER_DATA = "/tmp/peer-data/qqp_bench"
SIDE = os.path.join(common.ROOT, "bench", "peer_side.py")


def peer_ready(branch="v2"):
    """Why the peer cannot run here (None when it can)."""
    for path in (PEER_PY, ORIGINAL[branch], os.path.join(PEER_DATA, "train.jsonl"),
                 os.path.join(PEER, "harness", "common.sh")):
        if not os.path.exists(path):
            return f"{path} is missing: run MIRROR=<bare clone of Shark-NLP/DiffuSeq> bash ../shared/peer/setup.sh"
    return None


def train_original(branch, steps, run_dir, log):
    """The original trains its tiny shape on qqp_small for `steps` steps (its own train.py, the
    peer's flags); returns its EMA checkpoint."""
    cmd = (f"source {PEER}/harness/common.sh && peer_train {branch} tiny {steps} {run_dir} {PEER_DATA} "
           f"{run_dir}.timing.json {log} {steps}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    pt = os.path.join(run_dir, f"ema_0.9999_{steps:06d}.pt")
    if r.returncode or not os.path.isfile(pt):
        raise RuntimeError(f"the original's training failed (see {log}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return pt


def run_original(branch, pt, inputs, out, parts, steps, seed):
    env = {**os.environ, "PYTHONPATH": os.path.join(PEER, "harness", "stubs"), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([PEER_PY, SIDE, "--ckpt", pt, "--data", os.path.join(PEER_DATA, "valid.jsonl"),
                        "--inputs", inputs, "--out", out, "--parts", ",".join(parts), "--steps", str(steps),
                        "--seed", str(seed)], cwd=ORIGINAL[branch], env=env, capture_output=True, text=True)
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


@torch.no_grad()
def compare(branch="v2", pt=None, train_steps=200, n=64, parts=("tokens", "forward", "losses", "solver"),
            steps=10, seed=7, n_ancestral=4, work=None):
    work = work or tempfile.mkdtemp(prefix="original-")
    rec = {"branch": branch, "n": n, "parts": list(parts)}
    if pt is None:
        t0 = time.time()
        pt = train_original(branch, train_steps, os.path.join(work, f"{branch}_tiny"), os.path.join(work, "train.log"))
        rec["original_train_s"] = round(time.time() - t0, 1)
    rec["checkpoint"] = pt
    ours_dir = import_original(pt, os.path.join(work, "imported"))
    model = DiffuSeq.from_pretrained(ours_dir, "cpu")
    net, args = model.model, model.args
    rec["profile"] = args.recipe

    # the inputs both sides get
    g = torch.Generator().manual_seed(seed)
    L, D, T = model.seq_len, args.hidden_dim, args.diffusion_steps
    t = torch.cat([torch.tensor([0, T - 1]), torch.randint(0, T, (n - 2,), generator=g)])
    inputs = {"t": t, "z": torch.randn(n, L, D, generator=g), "noise": torch.randn(2, n, L, D, generator=g),
              "u": torch.rand(n, L, generator=g)}
    save_file(inputs, os.path.join(work, "inputs.safetensors"))
    theirs = run_original(branch, pt, os.path.join(work, "inputs.safetensors"), os.path.join(work, "out.safetensors"),
                          [p for p in parts if p != "ancestral"], steps, seed)  # the chain runs on fewer pairs
    ids, mask = theirs["input_ids"].long(), theirs["input_mask"].long()

    if "tokens" in parts:
        our_ids, our_mask = our_tokens(model, os.path.join(PEER_DATA, "valid.jsonl"), n, work)
        rec["tokens_rows_diff"] = int(((our_ids != ids) | (our_mask != mask)).any(1).sum())
    if "forward" in parts:
        pred = net(inputs["z"], t)
        rec["forward_diff"] = float((pred - theirs["pred"]).abs().max())
        rec["forward_scale"] = float(theirs["pred"].abs().max())
    if "losses" in parts:
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
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--branch", choices=["v2", "main"], default="v2")
    p.add_argument("--checkpoint", help="an ema_*.pt the original trained (default: train one)")
    p.add_argument("--train_steps", type=int, default=200)
    p.add_argument("--n", type=int, default=64, help="pairs of qqp_small valid")
    p.add_argument("--parts", default="tokens,forward,losses,solver,ancestral")
    p.add_argument("--steps", type=int, default=10, help="solver steps")
    p.add_argument("--n_ancestral", type=int, default=4, help="pairs decoded by the 2,000-step chain")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", help="record (default bench/peer/original_<branch>.json)")
    a = p.parse_args(argv)
    why = peer_ready(a.branch)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    parts = a.parts.split(",")
    if a.branch == "main" and "solver" in parts:
        parts.remove("solver")  # v1 has no solver
    rec = compare(a.branch, a.checkpoint, a.train_steps, a.n, parts, a.steps, a.seed, a.n_ancestral)
    rec["command"] = "python bench/bench_original.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rec["date"] = time.strftime("%Y-%m-%d")
    out = a.json or os.path.join(common.ROOT, "bench", "peer", f"original_{a.branch}.json")
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
