"""The original DiffuSeq's side of bench/bench_original.py's training comparison: runs under the
peer's Python with the original's checkout as the working folder, builds the original's model,
diffusion, loss-aware sampler and its own TrainLoop, starts from given weights, and runs optimiser
steps on given batches. It records every random draw the original makes (timesteps and weights
from its sampler, the Gaussian noise and Bernoulli draws of its training_losses) so that our side
can replay them, and the weights and EMA weights it ends with. Nothing of the original is copied
here: this file only calls it.

    cd /tmp/peer-orig-v2 && /tmp/peer-venv/bin/python /path/to/bench/peer_train_side.py \
        --init INIT.safetensors --batches BATCHES.safetensors --config CONFIG.json --out OUT.safetensors

INIT holds the initial weights under the original's names; BATCHES input_ids, input_mask [S, B, L];
CONFIG the model and training settings (see bench_original.train_config). OUT receives
  t, w [S, M, m]                 the timesteps and weights of each step's M microbatches of m
  noise0, noise1 [S, B, L, D]    the Gaussian draws of training_losses (z_0's, then z_t's), by row
  u [S, B, L]                    the uniforms behind its Bernoulli draws (DiffuSeq-v2), by row
  loss [S, B]                    the loss of each example
  final.<name>, ema.<name>       the weights after the steps, and the EMA weights as its EMA file
                                 holds them (the live word embedding included)
  loss_history, loss_counts      the loss-aware sampler's state at the end
"""
import argparse
import json
import os
import socket
import sys

sys.path.insert(0, os.getcwd())  # the original's checkout

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from basic_utils import args_to_dict, create_model_and_diffusion, load_defaults_config  # noqa: E402
from diffuseq.step_sample import create_named_schedule_sampler  # noqa: E402
from peer_side import Draws  # noqa: E402  (bench/, this file's folder)
from train_util import TrainLoop  # noqa: E402


class Recorder(Draws):
    """peer_side's Draws from one generator, each draw kept (the noise in `noise_drawn`, the
    uniforms behind the Bernoulli draws in `uniforms_drawn`)."""

    def __init__(self, generator):
        super().__init__(generator=generator)
        self.noise_drawn, self.uniforms_drawn = [], []

    def randn_like(self, x, *a, **k):
        out = super().randn_like(x)
        self.noise_drawn.append(out)
        return out

    def bernoulli(self, p):
        u = th.rand(p.shape, generator=self.g)
        self.uniforms_drawn.append(u)
        return (u < p).to(p.dtype)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--init", required=True)
    p.add_argument("--batches", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.config) as f:
        cfg = json.load(f)
    if not th.distributed.is_initialized():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        th.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    th.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    args = argparse.Namespace(**{**load_defaults_config(), **cfg["original_args"]})
    args.device = "cpu"
    model, diffusion = create_model_and_diffusion(**args_to_dict(args, load_defaults_config().keys()))
    model.load_state_dict(load_file(a.init))
    sampler = create_named_schedule_sampler("lossaware", diffusion)
    drawn = []
    sample = sampler.sample

    def recorded(n, device):
        t, w = sample(n, device)
        drawn.append((t.clone(), w.clone()))
        return t, w

    sampler.sample = recorded
    batches = load_file(a.batches)
    S, B, L = batches["input_ids"].shape
    loop = TrainLoop(model=model, diffusion=diffusion, data=None, batch_size=B, microbatch=cfg["microbatch"],
                     lr=cfg["lr"], ema_rate=str(cfg["ema_rate"]), log_interval=10 ** 9, save_interval=10 ** 9,
                     resume_checkpoint="", schedule_sampler=sampler, weight_decay=0.0,
                     learning_steps=cfg["learning_steps"], checkpoint_path=os.path.dirname(a.out),
                     gradient_clipping=-1.0, eval_data=None, eval_interval=-1)
    D = cfg["original_args"]["hidden_dim"]
    noise0, noise1, us, losses = [], [], [], []
    train_losses = diffusion.training_losses

    def kept(*args, **kw):
        out = train_losses(*args, **kw)
        losses.append(out["loss"].detach().clone())
        return out

    diffusion.training_losses = kept
    model.eval()  # dropout off: its draws come from streams the two codes cannot share
    for s in range(S):
        cond = {"input_ids": batches["input_ids"][s].long(), "input_mask": batches["input_mask"][s].long()}
        with Recorder(th.Generator().manual_seed(cfg["seed"] * 1000 + s)) as rec:
            loop.run_step(th.zeros(B, L, D), cond)
        loop.step += 1
        g = rec.noise_drawn  # per microbatch: z_0's noise, then z_t's
        noise0.append(th.cat(g[0::2]))
        noise1.append(th.cat(g[1::2]))
        us.append(th.cat(rec.uniforms_drawn) if rec.uniforms_drawn else th.zeros(B, L))
    M = B // cfg["microbatch"]
    out = {"t": th.stack([d[0] for d in drawn]).view(S, M, -1), "w": th.stack([d[1] for d in drawn]).view(S, M, -1),
           "noise0": th.stack(noise0), "noise1": th.stack(noise1), "u": th.stack(us),
           "loss": th.cat(losses).view(S, B),
           "loss_history": th.from_numpy(sampler._loss_history), "loss_counts": th.from_numpy(sampler._loss_counts)}
    for k, v in model.state_dict().items():
        out[f"final.{k}"] = v
    for k, v in loop._master_params_to_state_dict(loop.ema_params[0]).items():
        out[f"ema.{k}"] = v
    save_file({k: v.detach().contiguous().clone() for k, v in out.items()}, a.out)


if __name__ == "__main__":
    main()
