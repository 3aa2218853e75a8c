"""The original DiffuSeq's side of bench/bench_original.py: runs under the peer's Python with the
original's checkout as the working folder (set up by ../shared/peer/setup.sh), imports the
original's own modules, and computes with them what bench_original.py computes with ours, on the
same inputs. Nothing of the original is copied here: this file only calls it.

    cd /tmp/peer-orig-v2 && /tmp/peer-venv/bin/python /path/to/bench/peer_side.py \
        --ckpt RUN/ema_0.9999_000200.pt --data test.jsonl --inputs IN.safetensors --out OUT.safetensors \
        [--parts tokens,forward,losses,solver,ancestral] [--steps 10] [--seed 7]

IN holds t [N], z [N, L, D] (a model input), noise [2, N, L, D], u [N, L]. OUT receives:
  tokens:    input_ids, input_mask [N, L]: the pairs laid out by the original's data code
  forward:   pred [N, L, D] = the model's prediction of z_0 from (z, t)
  losses:    the terms of its training_losses (eval mode), its Gaussian draws replaced by noise[0]
             (z_0's) and noise[1] (z_t's), its Bernoulli draws by u < p
  solver:    solver_state [N, L, D], solver_tokens: v2's DPM-Solver run as its script runs it,
             from torch.randn(generator seeded --seed) on the target
  ancestral: ancestral_tokens: the original's p_sample_loop over all T steps (rounding every
             step), every Gaussian and Bernoulli draw taken from that same generator, in order
  gapped:    gapped_tokens: the v1 code's chain for --step below T (its
             ddim_sample_loop with gap T // --gap_steps, rounding every step), from that start
--autocast fp16 runs forward, losses and solver under fp16 autocast on the CPU.
"""
import argparse
import contextlib
import json
import os
import sys
from functools import partial
from types import SimpleNamespace

sys.path.insert(0, os.getcwd())  # the original's checkout

import torch as th  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from basic_utils import args_to_dict, create_model_and_diffusion, load_defaults_config, load_tokenizer  # noqa: E402
from diffuseq.rounding import denoised_fn_round  # noqa: E402
from diffuseq.text_datasets import helper_tokenize  # noqa: E402


def load(ckpt):
    with open(os.path.join(os.path.dirname(ckpt), "training_args.json")) as f:
        targs = json.load(f)
    args = SimpleNamespace(**{**load_defaults_config(), **targs})
    args.device = "cpu"  # v2 builds its schedule tables on args.device (its decoders set it so)
    model, diffusion = create_model_and_diffusion(**args_to_dict(args, load_defaults_config().keys()))
    model.load_state_dict(th.load(ckpt, map_location="cpu", weights_only=True))
    return args, model.eval(), diffusion


def tokens(args, path, n):
    rows = [json.loads(line) for line in open(path)][:n]
    tok = load_tokenizer(args)
    ds = helper_tokenize({"src": [r["src"].strip() for r in rows], "trg": [r["trg"].strip() for r in rows]},
                         tok, args.seq_len)
    ds = ds["train"]  # it returns a DatasetDict
    return th.tensor(ds["input_ids"]), th.tensor(ds["input_mask"])


class Draws:
    """th.randn_like and Tensor.bernoulli replaced, for one block, by prescribed tensors (in the
    order the original asks for them) or by draws from one generator."""

    def __init__(self, gaussians=None, uniforms=None, generator=None):
        self.gaussians, self.uniforms, self.g = list(gaussians or []), list(uniforms or []), generator

    def randn_like(self, x, *a, **k):
        if self.gaussians:
            return self.gaussians.pop(0).to(x.dtype).reshape(x.shape)
        return th.randn(x.shape, generator=self.g, dtype=x.dtype)

    def bernoulli(self, p, *a, **k):
        u = self.uniforms.pop(0).reshape(p.shape) if self.uniforms else th.rand(p.shape, generator=self.g)
        return (u < p).to(p.dtype)

    def __enter__(self):
        self.saved = th.randn_like, th.Tensor.bernoulli
        th.randn_like = self.randn_like
        th.Tensor.bernoulli = lambda p, *a, **k: self.bernoulli(p)  # a function: bound to the tensor
        return self

    def __exit__(self, *exc):
        th.randn_like, th.Tensor.bernoulli = self.saved


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--parts", default="tokens,forward,losses")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--autocast", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: forward, losses and solver under fp16 autocast (on CPU), as the original's v2 "
                        "trains (--use_fp16) and decodes (its scripts' CUDA autocast) on a GPU")
    p.add_argument("--gap_steps", type=int, default=100, help="gapped: the v1 code's --step")
    a = p.parse_args()
    amp = (lambda: th.autocast("cpu", dtype=th.float16)) if a.autocast == "fp16" else contextlib.nullcontext
    th.set_grad_enabled(False)
    args, model, diffusion = load(a.ckpt)
    inp = load_file(a.inputs)
    n = inp["t"].shape[0]
    ids, mask = tokens(args, a.data, n)
    out = {"input_ids": ids, "input_mask": mask}
    parts = a.parts.split(",")
    if "forward" in parts:
        with amp():
            out["pred"] = diffusion._wrap_model(model)(inp["z"], inp["t"]).float()  # the time input as training gives it
    if "losses" in parts:
        with Draws([inp["noise"][0], inp["noise"][1]], [inp["u"]]), amp():  # its x_start argument is unused
            terms = diffusion.training_losses(model, inp["z"], inp["t"],
                                              model_kwargs={"input_ids": ids, "input_mask": mask})
        for k, v in terms.items():
            out[f"loss_{k}"] = v.float()
    x_start = model.get_embeds(ids)
    mask3 = th.broadcast_to(mask.unsqueeze(-1), x_start.shape)
    if "solver" in parts:
        from dpm_solver_pytorch import DPM_Solver, NoiseScheduleVP, model_wrapper
        g = th.Generator().manual_seed(a.seed)
        noise = th.randn(x_start.shape, generator=g)
        x_noised = th.where(mask3 == 0, x_start, noise)
        ns = NoiseScheduleVP(schedule="discrete", betas=th.from_numpy(diffusion.betas))
        model_fn = model_wrapper(model, ns, model_type="x_start", model_kwargs={}, guidance_type="uncond")
        solver = DPM_Solver(model_fn, ns, algorithm_type="dpmsolver++")
        with amp():
            x = solver.sample(x_noised, steps=a.steps, order=2, skip_type="time_uniform", method="multistep",
                              input_ids_mask=mask3, x_start=x_start).float()
        out["solver_state"] = x
        out["solver_tokens"] = model.get_logits(x).argmax(-1)
    def last_of_chain(*args, **kw):
        """p_sample_loop without keeping every step's sample (2,000 of them fill the memory at 32
        pairs): its own progressive loop, the last sample kept."""
        kw.pop("gap")  # p_sample_loop takes it and does not pass it on
        for out in diffusion.p_sample_loop_progressive(*args, **kw):
            last = out["sample"]
        return [last]

    for part, loop, gap in (("ancestral", last_of_chain, 1),  # all T steps
                            ("gapped", getattr(diffusion, "ddim_sample_loop", None),  # the v1 code's --step < T
                             args.diffusion_steps // a.gap_steps)):
        if part not in parts:
            continue
        g = th.Generator().manual_seed(a.seed)  # the start, then every Gaussian and Bernoulli draw
        x_noised = th.where(mask3 == 0, x_start, th.randn(x_start.shape, generator=g))
        emb = th.nn.Embedding(*model.word_embedding.weight.shape, _weight=model.word_embedding.weight.clone())
        with Draws(generator=g):
            samples = loop(model, x_start.shape, noise=x_noised, clip_denoised=False,
                           denoised_fn=partial(denoised_fn_round, args, emb), model_kwargs={}, top_p=-1,
                           clamp_step=0, clamp_first=True, mask=mask3, x_start=x_start, gap=gap)
        last = samples[-1] if isinstance(samples, list) else samples
        out[f"{part}_tokens"] = model.get_logits(last).argmax(-1)
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)


if __name__ == "__main__":
    main()
