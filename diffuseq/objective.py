"""What one batch costs, in training and in validation: the random draws of a step (noise.py),
the editor examples laid over their targets (--source_rate), and training_losses under the run's
autocast and DiffuSeq-v2 settings. The Trainer owns the loop (data, optimiser, checkpoints,
logs); this module owns the objective it minimises."""
from dataclasses import dataclass
from typing import Optional

import torch

from . import dist
from .diffusion import target_region, training_losses
from .noise import draw_noise, draw_source


@dataclass
class Draws:
    """The draws of one batch: timesteps t [B], importance weights w [B], Gaussian noise
    [2, B, L, D], uniforms u [B, L] (discrete noise) and sc [B] (self-conditioning), and for an
    editor run `source`: (the laid source ids [B, L], which examples start from it [B] bool)."""
    t: torch.Tensor
    w: torch.Tensor
    noise: torch.Tensor
    u: torch.Tensor
    sc: torch.Tensor
    source: Optional[tuple] = None

    def part(self, sl):
        """The draws of the examples in slice sl (a microbatch)."""
        return Draws(self.t[sl], self.w[sl], self.noise[:, sl], self.u[sl], self.sc[sl],
                     None if self.source is None else (self.source[0][sl], self.source[1][sl]))


class Objective:
    def __init__(self, args, sched, layout, amp_dtype, device):
        self.args, self.sched, self.layout, self.amp_dtype, self.device = args, sched, layout, amp_dtype, device

    def draw(self, step, ids, mask, keep=None, sampler=None, index=None, seed=None):
        """The draws of a batch ids, mask [B, L] at `step`. Training (a timestep sampler given):
        drawn for the global batch of --bsz, index [B] picks this process's examples.
        Validation (sampler None): uniform timesteps for these B examples, from stream `seed`.
        An editor run also draws which examples start from their laid source, and their times."""
        a = self.args
        batch = ids.shape[0] if sampler is None else a.bsz
        if sampler is not None and getattr(a, "replicated_draws", False):
            # every process draws alike, for the largest share of the batch, and takes its first rows
            batch = -(-a.bsz // dist.world_size())
            index = torch.arange(ids.shape[0], device=ids.device)
        t, w, noise, u, sc = draw_noise(a, sampler, step, batch, ids.shape[1], self.device, seed=seed)
        d = Draws(t, w, noise, u, sc)
        use = None
        if a.source_rate > 0:
            use, t_src = draw_source(a, step, batch, self.device, seed=seed)
            d.t = torch.where(use, t_src, d.t)
        if index is not None:
            d = d.part(index)
            use = None if use is None else use[index]
        if use is not None:
            d.source = (self.layout.source_start(ids, mask, keep), use)
        return d

    def losses(self, net, ids, mask, d, keep=None, monitor=True):
        """training_losses of a batch with its draws d, under the run's autocast."""
        a, dev = self.args, self.device
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            return training_losses(net, self.sched, ids, mask, d.t, d.noise, u=d.u, self_cond_u=d.sc,
                                   reg_rate=a.reg_rate, denoise_rate=a.denoise_rate if a.denoise else 0.0,
                                   monitor=monitor, pad_id=self.layout.tokenizer.pad_id, keep=keep,
                                   positions=a.loss_positions, m_reg=a.m_reg, anchor=a.anchor_weight,
                                   **({} if d.source is None else dict(source_ids=d.source[0],
                                                                      from_source=d.source[1])))

    @torch.no_grad()
    def validate(self, model, batches, n_batches, margin):
        """Mean loss terms over the first n_batches of `batches` (make_eval_batches), with the
        draws of a stream of its own (uniform timesteps, seed + 1): the same at every call. An
        editor run (--source_rate) is validated on the same share of editor examples."""
        model.eval()
        sums, count = {}, 0
        for i, b in zip(range(n_batches), batches):
            ids, mask = b["input_ids"].to(self.device), b["input_mask"].to(self.device)
            keep = target_region(b["length"].to(self.device), margin, ids.shape[1])
            terms = self.losses(model, ids, mask, self.draw(i, ids, mask, keep, seed=self.args.seed + 1), keep)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.sum()
            count += ids.shape[0]
        model.train()
        return {k: float(v) / count for k, v in sums.items()}
