"""What one batch costs, in training and in validation: the random draws of a step and the loss
terms, as the run's model family defines them (family.py; for the Gaussian family the noise of
noise.py, the editor examples of --source_rate and diffusion.training_losses), under the run's
autocast. The Trainer owns the loop (data, optimiser, checkpoints, logs); this module owns the
objective it minimises."""
import torch

from .diffusion import target_region
from .family import family_of
from .gaussian import Draws  # noqa: F401  (the Gaussian family's draws, named here as before)


class Objective:
    """The objective of a run: its family's draws and losses (family.py), under the run's autocast."""

    def __init__(self, args, sched, layout, amp_dtype, device):
        self.args, self.sched, self.layout, self.amp_dtype, self.device = args, sched, layout, amp_dtype, device
        self.family = family_of(args)

    def draw(self, step, ids, mask, keep=None, sampler=None, index=None, seed=None):
        """The draws of a batch ids, mask [B, L] at `step`. Training (a timestep sampler given):
        drawn for the global batch of --bsz, index [B] picks this process's examples.
        Validation (sampler None): for these B examples, from stream `seed`."""
        return self.family.draw(self, step, ids, mask, keep, sampler, index, seed)

    def losses(self, net, ids, mask, d, keep=None, monitor=True):
        """The family's loss terms of a batch with its draws d, under the run's autocast."""
        dev = self.device
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            return self.family.losses(self, net, ids, mask, d, keep, monitor)

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
