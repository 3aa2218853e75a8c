"""One optimisation step of training: the objective's draws and losses over microbatches,
gradients synchronised across processes, clipping, loss scaling, the optimiser and the EMA, and
the losses handed back to a loss-aware timestep sampler. The loop around it is trainer.py."""
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from . import dist
from .diffusion import target_region
from .logs import add_terms
from .optim import lr_at


def gather_steps(parts, global_batch):
    """This process's part [local] of the global batch of each of some steps -> those global
    batches one after the other [steps * global], in the order one process would see them.
    Parts may differ by one example between processes (rank_slice): each is padded to the
    longest, and the padding dropped after the gather."""
    x = torch.stack(parts).float()
    width = -(-global_batch // dist.world_size())
    x = torch.cat([x, x.new_full((x.shape[0], width - x.shape[1]), float("nan"))], 1)
    x = dist.all_gather_cat(x)  # [world * steps, width], rank by rank
    x = x.view(-1, len(parts), width).transpose(0, 1).reshape(-1)
    return x[~torch.isnan(x)]


class NetView:
    """The denoiser as training_losses sees it: the forward pass through the wrapped net (DDP,
    so gradients are synchronised; or the compiled module), and the embeddings, logits and
    absorbing state from the model itself, which DDP does not expose."""

    def __init__(self, net, model):
        self.net, self.model = net, model

    def __call__(self, *args):
        return self.net(*args)

    def __getattr__(self, name):
        return getattr(self.model, name)


class TrainStep:
    """step(batch, n) runs optimisation step n + 1 and returns the detached per-term means over
    the global batch (on device); the monitoring terms nll and acc only on the last steps before
    a log line (see monitors)."""

    MONITOR_STEPS = 10  # steps before each log line that also compute the monitoring terms

    def __init__(self, args, proc, model, net, objective, opt, scaler, ema, sampler):
        self.args, self.proc, self.model, self.net, self.objective = args, proc, model, net, objective
        self.opt, self.scaler, self.ema, self.sampler = opt, scaler, ema, sampler
        self.pending = []  # (t, losses) not yet given to the timestep sampler

    def monitors(self, step):
        """Whether the step that reaches `step` computes nll and acc: one of the last
        MONITOR_STEPS before a log line (every step when log_interval <= MONITOR_STEPS)."""
        a = self.args
        return (-step) % a.log_interval < self.MONITOR_STEPS or a.learning_steps - step < self.MONITOR_STEPS

    def flush_sampler(self):
        """Give the timestep sampler the losses of the last steps, from every process."""
        if not self.pending or self.sampler.name == "uniform":
            self.pending = []
            return
        t = gather_steps([p[0] for p in self.pending], self.args.bsz).long()
        losses = gather_steps([p[1] for p in self.pending], self.args.bsz)
        self.sampler.update(t.cpu().numpy() - self.args.t_min, losses.cpu().numpy())
        self.pending = []

    def per_microbatch(self):
        """Whether the timestep sampler learns after every microbatch (--sampler_update
        microbatch; a uniform sampler learns nothing)."""
        return getattr(self.args, "sampler_update", "log") == "microbatch" and self.sampler.name != "uniform"

    def draw_times(self, step, i, n):
        """Timesteps and weights [n] of microbatch i of `step` from the sampler as it stands now
        (--sampler_update microbatch): drawn for every process's microbatch i at once from a
        stream of (seed, step, i), this process's rows taken (its first rows for all, with
        --replicated_draws)."""
        a = self.args
        g = torch.Generator().manual_seed((a.seed * 1_000_003 + step * 1009 + i + 1) % (2 ** 63))
        replicated = getattr(a, "replicated_draws", False)
        width = a.microbatch if replicated else a.microbatch * self.proc.world_size
        t, w = self.sampler.sample(width, g)
        lo = 0 if replicated else self.proc.rank * a.microbatch
        dev = self.proc.device
        return (t[lo:lo + n] + a.t_min).to(dev), w[lo:lo + n].to(dev)

    def learn_microbatch(self, t, losses):
        """Give the sampler one microbatch's timesteps and losses from every process, rank by rank."""
        every = self.args.microbatch * self.proc.world_size  # a microbatch of every process; the last may be short
        t = gather_steps([t.float()], every)
        losses = gather_steps([losses], every)
        self.sampler.update(t.long().cpu().numpy() - self.args.t_min, losses.cpu().numpy())

    def __call__(self, batch, step):
        a = self.args
        ids, mask, index = batch["input_ids"], batch["input_mask"], batch["index"]
        keep = target_region(batch["length"], a.length_margin, ids.shape[1])
        draws = self.objective.draw(step, ids, mask, keep, self.sampler, index)
        rank = 0 if getattr(a, "replicated_draws", False) else self.proc.rank
        torch.manual_seed((a.seed * 7919 + step * 104729 + rank) % (2 ** 63))  # dropout
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, a)
        sums, step_losses = {}, []
        net = NetView(self.net, self.model)
        # DDP averages gradients over processes: each divides by the mean share, so the step sees
        # the mean over the global batch even when processes hold one example more or less
        share = a.bsz / self.proc.world_size
        summed = getattr(a, "grad_accumulation", "mean") == "sum"
        micro = list(range(0, ids.shape[0], a.microbatch))
        for i, s in enumerate(micro):
            sl = slice(s, s + a.microbatch)
            sync = i == len(micro) - 1 or not isinstance(self.net, DDP)
            d = draws.part(sl)
            if self.per_microbatch():
                d.t, d.w = self.draw_times(step, i, len(d.t))
            with contextlib.nullcontext() if sync else self.net.no_sync():
                terms = self.objective.losses(net, ids[sl], mask[sl], d, None if keep is None else keep[sl],
                                              monitor=self.monitors(step + 1))
                # --grad_accumulation sum: each microbatch's mean, the gradients added (the original's)
                loss = (terms["loss"] * d.w).sum() / (len(d.t) if summed else share)
            self.scaler.scale(loss).backward()
            add_terms(sums, terms, d.t, a)
            step_losses.append(terms["loss"].detach().float())
            if self.per_microbatch():
                self.learn_microbatch(d.t, step_losses[-1])
        if not self.per_microbatch():
            self.pending.append((draws.t, torch.cat(step_losses)))
        if a.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.grad_clip) * share
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update()
        return {k: v / share for k, v in sums.items()}
