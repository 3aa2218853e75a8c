"""Decoders of the masked family: from every target position masked to tokens in a few steps.

Each is a function of `predict(x, t) -> log p [N, V]` (masked.TokenPredictor: the log-probabilities
of the N region positions `rows` [B, L] of tokens x [B, L] at masking rate t), the start x (the
region masked), the number of steps and its options; it returns the tokens [B, L] and the
log-probability [B, L] of each token it wrote (0 outside the region).

  mdlm  MDLM's ancestral sampler. Over a grid of rates 1 = t_0 > t_1 > ... > t_K = 0, each step
        from t to s unmasks each masked position with probability (t - s) / t (the posterior of
        the linear schedule) and draws its token; written tokens stay. The last step, into s = 0,
        writes every position still masked with its most likely token (MDLM's noise removal).
        Where a step unmasks nothing, the input is the same as at the last call: a model that does
        not see t (--time_cond false) is not called again (the cached update).
  topk  RDM's reparameterised decoding (mask-predict's re-masking): every step predicts the masked
        positions, then masks again the round(t_next n) positions of lowest score (the
        log-probability of their token when it was written), written tokens included, and keeps
        the rest. deterministic re-masking ranks the scores; stochastic adds Gumbel noise
        scaled by t_next, so early choices are looser. One step writes the argmax everywhere.

The rates fall linearly (t_k = 1 - k / K) or on a cosine (t_k = cos(pi k / 2K)), which unmasks
few tokens first and many at the end.
"""
import math
from dataclasses import dataclass

import torch

from .samplers import Sampler, lowest

SCHEDULES = ("linear", "cosine")


def mask_rates(steps, schedule="linear"):
    """The rates t_0 = 1 > t_1 > ... > t_K = 0 of K steps, float64 [K + 1]."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"a masked decoder takes 1 or more steps, not {steps}")
    s = torch.arange(steps + 1, dtype=torch.float64) / steps
    rates = 1 - s if schedule == "linear" else torch.cos(math.pi / 2 * s)
    rates[-1] = 0.0
    return rates


def pick_tokens(logp, temperature, generator=None):
    """Tokens [N] from log-probabilities [N, V]: the most likely at temperature 0, else drawn from
    p^(1 / temperature) (renormalised)."""
    if temperature == 0 or logp.shape[0] == 0:
        return logp.argmax(-1)
    probs = (logp / temperature).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class MDLMOptions:
    temperature: float = 1.0  # of the tokens drawn as positions unmask (0: the most likely)
    schedule: str = "linear"  # how the masked share falls over the steps: linear or cosine
    dedup: bool = False  # drop a token equal to the one before it (see dedup)


@dataclass
class TopkOptions:
    temperature: float = 0.0  # of the tokens written at masked positions (0: the most likely)
    schedule: str = "linear"  # how the masked share falls over the steps: linear or cosine
    remask_mode: str = "deterministic"  # which positions are masked again: the lowest scores, or stochastic
    dedup: bool = False  # drop a token equal to the one before it (see dedup)


def dedup(x, score, rows, pad_id):
    """Tokens written in parallel often repeat their neighbour ("asked asked"); non-autoregressive
    translation removes such repeats after decoding. Each region token (rows [B, L]) equal to the
    region token before it is dropped, the rest move up and the freed positions at the region's
    end become [PAD] (score 0). Returns (x, score)."""
    x, score = x.clone(), score.clone()
    for b in range(x.shape[0]):
        at = rows[b].nonzero()[:, 0]
        if len(at) < 2:
            continue
        tok, sc = x[b, at], score[b, at]
        keep = torch.ones_like(tok, dtype=torch.bool)
        keep[1:] = tok[1:] != tok[:-1]
        n = int(keep.sum())
        x[b, at] = torch.cat([tok[keep], tok.new_full((len(at) - n,), pad_id)])
        score[b, at] = torch.cat([sc[keep], sc.new_zeros(len(at) - n)])
    return x, score


@torch.no_grad()
def mdlm_sample(predict, x, rows, steps, temperature=1.0, schedule="linear", mask_id=None, generator=None,
                progress=None):
    """MDLM's ancestral sampler (module docstring). x [B, L] with rows [B, L] masked."""
    rates = mask_rates(steps, schedule)
    x, masked = x.clone(), rows.clone()
    score = torch.zeros(x.shape, device=x.device)
    logp, changed = None, True
    idx = range(steps)
    for k in (progress(idx) if progress else idx):
        t, s = float(rates[k]), float(rates[k + 1])
        if changed or logp is None or not getattr(predict, "time_independent", False):
            logp = predict(x, t)  # [N, V] over rows
        u = torch.rand(x.shape, generator=generator, device=x.device)
        unmask = masked & (u < (t - s) / t) if s > 0 else masked
        pick = unmask[rows]  # which of the N region positions are written now
        tok = pick_tokens(logp[pick], 0.0 if s == 0 else temperature, generator)
        x[unmask] = tok
        score[unmask] = logp[pick].gather(1, tok[:, None]).squeeze(1)
        masked &= ~unmask
        changed = bool(unmask.any())
    return x, score


@torch.no_grad()
def topk_sample(predict, x, rows, steps, temperature=0.0, schedule="linear", remask_mode="deterministic",
                mask_id=None, generator=None, progress=None):
    """RDM's top-k re-masking (module docstring). x [B, L] with rows [B, L] masked."""
    if remask_mode not in ("deterministic", "stochastic"):
        raise ValueError(f"unknown remask_mode {remask_mode!r}; choose deterministic or stochastic")
    rates = mask_rates(steps, schedule)
    x, masked = x.clone(), rows.clone()
    score = torch.zeros(x.shape, device=x.device)
    n = rows.sum(1).to(torch.float64)
    idx = range(steps)
    for k in (progress(idx) if progress else idx):
        logp = predict(x, float(rates[k]))
        pick = masked[rows]
        tok = pick_tokens(logp[pick], temperature, generator)
        x[masked] = tok
        score[masked] = logp[pick].gather(1, tok[:, None]).squeeze(1)
        t_next = float(rates[k + 1])
        if t_next == 0:
            break
        key = score
        if remask_mode == "stochastic":
            g = -torch.log(-torch.log(torch.rand(x.shape, generator=generator, device=x.device).clamp(1e-20, 1)))
            key = score + t_next * g
        masked = lowest(key, rows, torch.round(t_next * n).long())
        x = x.masked_fill(masked, mask_id)
    return x, score


def run_mdlm(predict, x, rows, *, steps, options, mask_id, generator=None, progress=None):
    return mdlm_sample(predict, x, rows, steps, options.temperature, options.schedule, mask_id, generator, progress)


def run_topk(predict, x, rows, *, steps, options, mask_id, generator=None, progress=None):
    return topk_sample(predict, x, rows, steps, options.temperature, options.schedule, options.remask_mode,
                       mask_id, generator, progress)


SAMPLERS = {s.name: s for s in (
    Sampler("topk", TopkOptions, 10, run_topk,
            "masked models: top-k re-masking of the least confident tokens (RDM, mask-predict)", family="masked"),
    Sampler("mdlm", MDLMOptions, 10, run_mdlm,
            "masked models: MDLM's ancestral sampler, with no model call where nothing changed", family="masked"))}


def _all_masked(sampler, steps, **kw):
    return dict(sampler=sampler, steps=steps, init="noise", **kw)


# The settings tune_decode.py tries on a masked model, cheapest first.
GRIDS = {
    "quick": [
        _all_masked("topk", 5), _all_masked("topk", 10), _all_masked("topk", 20),
        _all_masked("topk", 10, schedule="cosine"), _all_masked("topk", 10, remask_mode="stochastic"),
        _all_masked("topk", 10, length_beam=3),  # length candidates, scored by mean token log-probability
        _all_masked("topk", 10, dedup=True), _all_masked("topk", 20, length_beam=3, dedup=True),
        _all_masked("mdlm", 10), _all_masked("mdlm", 20, temperature=0.5),
    ],
    "full": [
        *[_all_masked("topk", k) for k in (1, 2, 5, 10, 20)],
        *[_all_masked("topk", k, schedule="cosine") for k in (5, 10, 20)],
        _all_masked("topk", 10, remask_mode="stochastic"), _all_masked("topk", 20, remask_mode="stochastic"),
        _all_masked("topk", 10, length_beam=3), _all_masked("topk", 10, length_beam=5),
        _all_masked("topk", 10, lengths="source"), _all_masked("topk", 10, dedup=True),
        _all_masked("topk", 20, dedup=True), _all_masked("topk", 20, length_beam=3, dedup=True),
        *[_all_masked("mdlm", k) for k in (5, 10, 20)],
        _all_masked("mdlm", 20, temperature=0.5), _all_masked("mdlm", 20, temperature=0.5, schedule="cosine"),
    ],
}
