"""The Gaussian family: DiffuSeq's diffusion over word embeddings, with DiffuSeq-v2's soft
absorbing state and discrete noise, and the original-* profiles (family.py has the interface).

Training: timesteps from the timestep sampler, Gaussian noise and the uniforms of discrete noise
(noise.py), and diffusion.training_losses. Decoding: a start from noise around m (or from the
source laid over the target), one of samplers.py's samplers, and rounding to tokens through the
tied logits.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from .diffusion import q_sample, training_losses
from .noise import draw_noise, draw_rows, draw_source
from .samplers import SAMPLERS


def _noise(sampler, steps, **kw):
    return dict(sampler=sampler, steps=steps, init="noise", **kw)


def _source(t_start, steps, sampler="dpm", lengths=None, edits=1):
    s = dict(sampler=sampler, steps=steps, init="source", t_start=t_start)
    s = s if edits == 1 else dict(s, edits=edits)
    return s if lengths is None else dict(s, lengths=lengths)


# Grids of settings, cheapest first. "quick" is what the default job tries (about a minute on 200
# Bible verses, one core); "full" adds the ancestral chain, the SDE solver and more start points.
# A source start tries two length rules: the predicted length, and the source's.
GRIDS = {
    "quick": [
        _noise("dpm", 10),                      # DPM-Solver++ with absorption (the trained rate)
        _noise("dpm", 10, absorb_rate=0.0),     # DPM-Solver++ without absorption (deterministic)
        _noise("dpm", 10, remask="confidence"),  # re-masking the least sure tokens instead of random ones
        *[_source(t, 1, lengths=n) for t in (1, 50, 200, 400) for n in (None, "source")],
        _source(400, 3), _source(800, 3), _source(1200, 10),
        _source(50, 1, edits=2), _source(200, 1, edits=2),  # iterated edits: a second pass from the first's output
    ],
    "full": [
        _noise("dpm", 5), _noise("dpm", 10), _noise("dpm", 20),
        _noise("dpm", 10, absorb_rate=0.0), _noise("dpm", 10, absorb_rate=0.25),
        _noise("dpm", 10, remask="confidence"), _noise("dpm", 20, remask="confidence"),
        _noise("dpm", 10, sde=True, absorb_rate=0.0), _noise("dpm", 10, sde=True),
        _noise("dpm", 10, skip="time_uniform"), _noise("dpm", 10, lengths="source"),
        _noise("ancestral", 20), _noise("ancestral", 50),
        *[_source(t, 1, lengths=n) for t in (1, 50, 200, 400, 800) for n in (None, "source")],
        _source(50, 3), _source(200, 3), _source(400, 3), _source(800, 3), _source(1200, 3),
        _source(200, 3, lengths="source"), _source(200, 10), _source(800, 10), _source(1200, 10),
        _source(1600, 10), _source(400, 20, sampler="ancestral"),
    ],
}

COLUMNS = ("columns: mse = |f(z_t, t) - z_0|^2 on the target; tT = |mean of q(z_T | z_0) - m|^2 (tiny when "
           "the schedule reaches pure noise); decoder_nll = -log p(w | z_0), the rounding term; reg = the "
           "penalty on the absorbing state m; length = 0.1 x cross-entropy of the length head; anchor = "
           "--anchor_weight x nll (when set); loss = their sum, the objective; grad_norm = before clipping; "
           "nll, acc = of the tokens rounded from the predicted z_0 (last 10 steps before the line); "
           "acc_q1..q4 = that accuracy in each quarter of the trained noise levels, q1 the least noisy")


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


class GaussianFamily:
    name = "gaussian"
    samplers = SAMPLERS
    grids = GRIDS
    columns = COLUMNS
    # the accuracy panel of loss.png: its title and the names of its four quarters (plots.py)
    accuracy = ("accuracy of the tokens rounded from the predicted z_0",
                ("least noisy quarter", "2nd quarter", "3rd quarter", "noisiest quarter"))
    prior = "noise"  # how a decoding setting names a start from the prior (choice.describe)
    generation = "from noise"  # how a report names generation from the prior
    selection = "loss"  # the validation column whose lowest value makes a checkpoint the run's best (best.json)

    # the options only this family reads, and the value that leaves each off (family.foreign_options)
    own_options = dict(learned_mean_embed=False, denoise=False, self_cond=False, source_rate=0.0, t_min=0,
                       anchor_weight=0.0, loss_positions="target", schedule_sampler="uniform")

    @staticmethod
    def default_sampler(solver=True):
        """What decoding runs when nobody says: DPM-Solver++ (run_decode_solver.py and
        generate()), ancestral sampling (run_decode.py)."""
        return "dpm" if solver else "ancestral"

    @staticmethod
    def output_tag(settings):
        """What an output file's name adds for these settings (decoding.output_path): nothing, as
        before families (the start, edits and length beam are named there)."""
        return ""

    @classmethod
    def command_sampler(cls, solver):
        """The sampler a decode command uses when not told: its own (with the settings saved for
        it in decoding.json)."""
        return cls.default_sampler(solver)

    # ------------------------------------------------------------------ training
    def draw(self, objective, step, ids, mask, keep=None, sampler=None, index=None, seed=None):
        """The draws of a batch ids, mask [B, L] at `step` (Draws). Training (a timestep
        sampler given): drawn for the global batch of --bsz, index [B] picks this process's
        examples. Validation (sampler None): uniform timesteps for these B examples, from stream
        `seed`. An editor run also draws which examples start from their laid source, and their
        times."""
        a = objective.args
        batch, index = draw_rows(a, sampler, ids, index)
        t, w, noise, u, sc = draw_noise(a, sampler, step, batch, ids.shape[1], objective.device, seed=seed)
        d = Draws(t, w, noise, u, sc)
        use = None
        if a.source_rate > 0:
            use, t_src = draw_source(a, step, batch, objective.device, seed=seed)
            d.t = torch.where(use, t_src, d.t)
        if index is not None:
            d = d.part(index)
            use = None if use is None else use[index]
        if use is not None:
            d.source = (objective.layout.source_start(ids, mask, keep), use)
        return d

    def losses(self, objective, net, ids, mask, d, keep=None, monitor=True):
        """diffusion.training_losses of a batch with its draws d."""
        a = objective.args
        return training_losses(net, objective.sched, ids, mask, d.t, d.noise, u=d.u, self_cond_u=d.sc,
                               reg_rate=a.reg_rate, denoise_rate=a.denoise_rate if a.denoise else 0.0,
                               monitor=monitor, pad_id=objective.layout.tokenizer.pad_id, keep=keep,
                               positions=a.loss_positions, m_reg=a.m_reg, anchor=a.anchor_weight,
                               **({} if d.source is None else dict(source_ids=d.source[0],
                                                                  from_source=d.source[1])))

    # ------------------------------------------------------------------ decoding
    def decode(self, pipe, ids, mask, keep, dec, g, progress=None, scored=False):
        """One decoding of a batch cut to its regions (ids, mask [B, L], keep [B, L] or None):
        a start from noise around m, or from the source laid over the target and noised to
        t_start (repeated dec.edits times from the last output), the sampler's walk, and rounding
        of the last prediction of z_0 to tokens on the target region. Returns the token ids
        [B, L] and, when scored, the log-probability of each region token [B, L] (0 elsewhere;
        else None)."""
        model, T = pipe.model, pipe.args.diffusion_steps
        t_start, absorb_rate = dec.start_time(T), dec.absorption(pipe.args)
        x_start = model.get_embeds(ids)
        m = model.mean_embed
        region = mask if keep is None else mask * keep
        spec = self.samplers[dec.sampler]
        clamping = dec.clamping if dec.clamping is not None else bool(spec.clamps and spec.clamps(m))
        from .adapters import Clamp
        clamp = Clamp(model.word_embedding.weight, region) if clamping else None
        start = None if dec.init == "noise" else pipe.layout.source_start(ids, mask, keep)
        rows = region.bool()
        for _ in range(1 if dec.init == "noise" else dec.edits):
            noise = torch.randn(x_start.shape, generator=g, device=pipe.device)
            if start is None:
                z = noise if m is None else noise + m
            else:  # a source start, or the last pass's output laid where it was (edits > 1)
                t = torch.full((ids.shape[0],), t_start, device=pipe.device, dtype=torch.long)
                z = q_sample(pipe.sched, model.get_embeds(start), t, noise, mask, m)
            _, z0 = spec.run(pipe.denoiser(mask, keep, dec.init), pipe.sched, z, x_start, mask, m=m,
                             steps=dec.steps or spec.steps(T), t_start=t_start, options=dec.options,
                             clamp=clamp, clamp_step=dec.clamp_step, clamp_first=dec.clamp_first,
                             absorb_rate=absorb_rate, generator=g, progress=progress)
            # rounding to tokens where it is read: the target region, not the source or the padding
            logits = model.get_logits(z0[rows])
            out = ids.clone()
            out[rows] = logits.argmax(-1)
            start = out
        scores = None
        if scored:
            scores = torch.zeros(rows.shape, device=pipe.device)
            scores[rows] = logits.float().log_softmax(-1).amax(-1)
        return out, scores
