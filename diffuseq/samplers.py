"""Samplers: short update rules walked over one grid.

A sampler is put together from four small parts:

* a `Grid` (diffuseq.grid): the points it visits, with the model's time, alpha, sigma, lambda;
* the model as every rule sees it (`Predictor`): z_0 predicted at a grid point, rounded where
  clamping says, with the source laid back, in the frame the rule runs in;
* a `Rule`: one step from point i - 1 to point i from the state and the newest predictions
  (ancestral, DPM-Solver++ of orders 1-3, SDE-DPM-Solver++, DiffuSeq-v2's own solver);
* an optional correction between steps (`Absorb`: DiffuSeq-v2's discrete noise at sampling time).

`walk` runs them; `ancestral_sample`, `dpm_solver_sample` and `original_v2_solve` put them
together as the CLIs name them. The network side (its mask, noise floor, self-conditioning,
precision) is adapters.Denoise, which the samplers see as `denoise(z, t) -> z0_hat` with t
training timesteps [B], possibly fractional. Shapes: z, x_start [B, L, D]; mask [B, L] (1 on the
target y, whose rows alone are sampled; the source x is laid back after every step).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .diffusion import _offset, absorb
from .grid import Grid, posterior_std
from .schedule import NoiseScheduleVP


def _reimpose(z, x_start, mask):
    return torch.where(mask.unsqueeze(-1).bool(), z, x_start)


def clamps_at(t, clamp_step, clamp_first=True):
    """Whether the predicted z_0 is rounded at training timestep t: from T down to clamp_step
    (clamp_first, the original's default), or from clamp_step down to 0."""
    return t >= clamp_step if clamp_first else t <= clamp_step


# ------------------------------------------------------------------------------- the model
class Predictor:
    """The model as the rules see it: at grid point i, the prediction of z_0 from the state x.

    The rules run in a frame: with `m` (centre=True) the coordinates w = z - m on the target,
    where the process is the usual VP one toward 0 and the absorbing state is 0; otherwise z
    itself, the absorbing state m (the posterior then taken as if m were 0, as DiffuSeq-v2's
    code does). The prediction is rounded to word embeddings by `clamp` where
    clamps_at(the point's level), and the source laid back. via_eps sends it through the noise
    parameterisation and back in float32, as DiffuSeq-v2's solver does. `z0` keeps the last
    prediction in z coordinates."""

    def __init__(self, denoise, grid, x_start, mask, m=None, centre=True, clamp=None, clamp_step=0,
                 clamp_first=True, via_eps=False):
        self.denoise, self.grid, self.x_start, self.mask = denoise, grid, x_start, mask
        self.off = _offset(mask, m) if centre else None
        self.state = None if m is None else (torch.zeros_like(m) if centre else m)  # absorbing state in the frame
        self.clamp, self.clamp_step, self.clamp_first, self.via_eps = clamp, clamp_step, clamp_first, via_eps
        self.z0 = None

    def frame(self, z):
        return z if self.off is None else z - self.off

    def unframe(self, x):
        return x if self.off is None else x + self.off

    def lay(self, x):
        """The source laid back (the frame is z itself on the source)."""
        return _reimpose(x, self.x_start, self.mask)

    def __call__(self, x, i):
        g, z = self.grid, self.unframe(x)
        z0 = self.denoise(z, g.t_model[i].float().expand(z.shape[0]).to(z.device, non_blocking=True))
        if self.via_eps:
            a, s = g.alpha[i].float().item(), g.sigma[i].float().item()
            z0 = self.lay((z - s * ((z - a * z0) / s)) / a)
        if self.clamp is not None and clamps_at(float(g.level[i]), self.clamp_step, self.clamp_first):
            z0 = self.lay(self.clamp(z0))
        self.z0 = z0
        return self.frame(z0)


# ------------------------------------------------------------------------------- the rules
# Each takes the grid, the index i of the point stepped to, the state x at point i - 1 and the
# predictions `hist` (newest last, at points i - 1, i - 2, ...), and returns the state at point i
# (for a stochastic rule, its mean). Coefficients are float64 on the host, applied as scalars.

def posterior_step(g, i, x, hist, order=1):
    """The mean of the posterior q(z_t | z_s, z_0 = hist[-1]): the ancestral step, and the first
    order SDE-DPM-Solver++ step. order 2 adds the multistep correction of SDE-DPM-Solver++ 2M."""
    h = g.h(i)
    phi = -torch.expm1(-2.0 * h)  # 1 - e^-2h
    x_t = float(g.sigma[i] / g.sigma[i - 1] * torch.exp(-h)) * x + float(g.alpha[i] * phi) * hist[-1]
    if order >= 2:
        r0 = g.h(i - 1) / h
        x_t = x_t + float(0.5 * g.alpha[i] * phi / r0) * (hist[-1] - hist[-2])
    return x_t


def dpm_step(g, i, x, hist, order=1):
    """Multistep DPM-Solver++ (data prediction) on the probability-flow ODE, order 1, 2 or 3."""
    h = g.h(i)
    alpha_t = g.alpha[i]
    phi_1 = torch.expm1(-h)
    x_t = float(g.sigma[i] / g.sigma[i - 1]) * x - float(alpha_t * phi_1) * hist[-1]
    if order >= 2:
        r0 = g.h(i - 1) / h
        d1_0 = (hist[-1] - hist[-2]) / float(r0)
        if order == 2:
            return x_t - float(0.5 * alpha_t * phi_1) * d1_0
        r1 = g.h(i - 2) / h
        d1_1 = (hist[-2] - hist[-3]) / float(r1)
        d1 = d1_0 + float(r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / float(r0 + r1)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        x_t = x_t + float(alpha_t * phi_2) * d1 - float(alpha_t * phi_3) * d2
    return x_t


def small_std(g, i):
    """The posterior std of the step (sqrt(beta~) on the chain); 0 into a clean point."""
    return float(posterior_std(g.sigma[i], g.h(i)))


def beta_std(g, i):
    """sqrt(beta) of the step, 1 - (alpha_s / alpha_t)^2: the original's "large" variance; no noise
    into a clean point."""
    return float(torch.sqrt(1.0 - (g.alpha[i - 1] / g.alpha[i]) ** 2)) if g.sigma[i] > 0 else 0.0


@dataclass(frozen=True)
class Rule:
    step: Callable  # (grid, i, x, hist, order) -> state at point i (its mean, for a stochastic rule)
    order: int = 1
    noise: Optional[Callable] = None  # (grid, i) -> std of the fresh Gaussian noise of the step
    from_prediction: bool = False  # step from the newest prediction instead of the state (DiffuSeq-v2)

    def order_at(self, i, steps):
        """Lower orders while the history fills, and at the end of runs under 10 steps (stabler)."""
        k = min(self.order, i)
        return min(k, steps + 1 - i) if steps < 10 else k


# ------------------------------------------------------------------------------- corrections
def lowest(score, region, k):
    """[B, L] bool: the k [B] positions of region [B, L] with the lowest score [B, L] in each row
    (all of them where k exceeds the region)."""
    rank = score.masked_fill(~region.bool(), float("inf")).argsort(1).argsort(1)  # 0 = lowest
    return (rank < k[:, None]) & region.bool()


def least_confident(conf, mask, share):
    """[B, L] float: 0 on the round(share * n) target positions (mask [B, L]) of lowest confidence
    conf [B, L] of each example (n: its target positions), 1 elsewhere."""
    k = torch.round(share * mask.sum(1).to(conf.dtype)).long()
    return (~lowest(conf, mask, k)).to(conf.dtype)


def check_remask(remask):
    if remask not in ("random", "confidence"):
        raise ValueError(f"unknown remask {remask!r}; choose random or confidence")


@dataclass
class Absorb:
    """DiffuSeq-v2's discrete noise at sampling time, applied after every step but the last: each
    target token goes to the absorbing state with probability p = rate * std(grid, i), the std
    of the step (the rule of the ancestral chain, whose step n absorbs with rate * sqrt(beta~_n)).
    remask "random" draws each token independently; "confidence" takes the round(p * n) tokens
    of each example the model is least sure of (`confidence(z0)` [B, L] of the last prediction,
    as mask-predict and MaskGIT re-mask), drawing nothing. Returns the state and, with
    first_order_after, which examples lost tokens (the rule's next step is then first order for
    them: a multistep update would mix a prediction made before the re-mask)."""
    rate: float
    std: Callable = small_std
    remask: str = "random"
    confidence: Optional[Callable] = None
    first_order_after: bool = True

    def __post_init__(self):
        check_remask(self.remask)
        if self.remask == "confidence" and self.confidence is None:
            raise ValueError("remask='confidence' needs the model's confidence function")

    def __call__(self, x, model, i, generator=None):
        p, mask = self.rate * self.std(model.grid, i), model.mask
        if self.remask == "confidence":
            # the share is of the tokens the model writes: a region cut to a length hides the rest
            keep = getattr(model.denoise, "keep", None)
            region = mask if keep is None else mask * keep
            u, p = least_confident(self.confidence(model.z0), region, p), 0.5  # u is 0 on the tokens to take
        else:
            u = torch.rand(x.shape[:2], generator=generator, device=x.device)
        x = absorb(x, mask, model.state, torch.full((x.shape[0],), p, device=x.device), u)
        return x, (((u < p) & mask.bool()).any(1) if self.first_order_after else None)


# ------------------------------------------------------------------------------- the walk
def walk(model, rule, z, correction=None, final_call=False, generator=None, progress=None):
    """Run `rule` over model.grid from z (at its first point): a prediction at every point but the
    last (and there too with final_call), a step between each two, `correction` after every step
    but the last. Returns the state at the last point, in z coordinates."""
    K = model.grid.steps
    x = model.lay(model.frame(z))
    hist, hit = [model(x, 0)], None
    idx = range(1, K + 1)
    for i in (progress(idx) if progress else idx):
        k = rule.order_at(i, K)
        src = hist[-1] if rule.from_prediction else x
        new = rule.step(model.grid, i, src, hist, k)
        if k > 1 and hit is not None and hit.any():
            new = torch.where(hit.view(-1, 1, 1), rule.step(model.grid, i, src, hist, 1), new)
        std = rule.noise(model.grid, i) if rule.noise else 0.0
        if std > 0:
            new = new + std * torch.randn(new.shape, generator=generator, device=new.device, dtype=new.dtype)
        hit = None
        if correction is not None and i < K:
            new, hit = correction(new, model, i, generator)
        x = model.lay(new)
        if i < K or final_call:
            hist = (hist + [model(x, i)])[-3:]
    return model.unframe(x)


# ------------------------------------------------------------------------------- the samplers
@torch.no_grad()
def ancestral_sample(denoise, sched, z, x_start, mask, m=None, clamp=None, clamp_step=0,
                     clamp_first=True, variance="small", denoise_rate=0.0, generator=None,
                     progress=None, centre=True, steps=None, t_start=None):
    """Ancestral sampling over the chain of a DiscreteSchedule (`steps` of its timesteps up to
    t_start; default all): z_0 predicted (rounded where clamps_at), the next state drawn from
    the posterior mean with noise of std sqrt(beta~) ("small") or sqrt(beta) ("large", the
    original's). With denoise_rate r > 0 and m, each target token is then absorbed into m with
    probability r times that std. centre=False takes the posterior mean as if m were 0, as
    DiffuSeq-v2's code does. Returns (z, the last prediction of z_0)."""
    if variance not in ("small", "large"):
        raise ValueError(f"unknown variance {variance!r}; choose small or large")
    std = small_std if variance == "small" else beta_std
    model = Predictor(denoise, Grid.chain(sched, steps, t_start), x_start, mask, m, centre, clamp, clamp_step,
                      clamp_first)
    absorbing = Absorb(denoise_rate, std, first_order_after=False) if denoise_rate > 0 and m is not None else None
    z = walk(model, Rule(posterior_step, 1, std), z, absorbing, generator=generator, progress=progress)
    return z, model.z0


@torch.no_grad()
def dpm_solver_sample(denoise, ns, z, x_start, mask, m=None, steps=10, order=2,
                      skip="time_uniform", t_start=None, clamp=None, clamp_step=0, clamp_first=True,
                      progress=None, final_call=True, absorb_rate=0.0, sde=False, generator=None,
                      after_absorb="first", remask="random", confidence=None):
    """Multistep DPM-Solver++ (data prediction) of order 1, 2 or 3 on the probability-flow ODE,
    or with sde=True SDE-DPM-Solver++ (orders 1 and 2, fresh noise of the posterior std each step).

    `ns` is a NoiseScheduleVP; the solve runs over Grid.solver (from continuous time t_start,
    default 1) in the frame w = z - m, where the process is the usual VP one toward 0. The solve
    ends at t = 1/T, where z_t is z_0 up to noise of the first timestep's level (std 0.12 with the
    sqrt schedule at T = 2000). With final_call, one more prediction there gives z_0 (steps + 1
    model calls; on the Bible it scored 0.6 BLEU more with 10 steps); without it, z_t itself is
    the result (`steps` calls, as the original's solver). absorb_rate r > 0 (with m) applies
    Absorb between steps (remask, confidence: see there); after_absorb "first" makes the step after
    an absorption first order for the examples that lost tokens, "keep" mixes the predictions
    anyway. With r = 0 and sde False the solve is deterministic. Returns (z, z_0)."""
    if order not in (1, 2, 3):
        raise ValueError("DPM-Solver++ order must be 1, 2 or 3")
    if sde and order == 3:
        raise ValueError("SDE-DPM-Solver++ has orders 1 and 2")
    if after_absorb not in ("keep", "first"):
        raise ValueError(f"unknown after_absorb {after_absorb!r}; choose keep or first")
    absorbing = None
    if absorb_rate > 0 and m is not None:
        absorbing = Absorb(absorb_rate, small_std, remask, confidence, first_order_after=after_absorb == "first")
    else:
        check_remask(remask)
    model = Predictor(denoise, Grid.solver(ns, steps, skip, t_start), x_start, mask, m, True, clamp, clamp_step,
                      clamp_first)
    rule = Rule(posterior_step, order, small_std) if sde else Rule(dpm_step, order)
    z = walk(model, rule, z, absorbing, final_call, generator, progress)
    return z, _reimpose(model.z0 if final_call else z, x_start, mask)


@torch.no_grad()
def original_v2_solve(denoise, ns, z, x_start, mask, steps=10, order=2, progress=None):
    """DiffuSeq-v2's own solver, as its code runs it (not DPM-Solver++ as published): its grid
    (Grid.original_v2: uniform in time, the model told t * T, one training step above the level of
    its input); before every update the state is replaced by the model's prediction of z_0 (the
    source laid back in), so the starting noise reaches only the first call; multistep updates of
    order up to `order`; no absorbing state (the start is N(0, I) whatever m is), no rounding, no
    final call: tokens are read from the last update's state. The prediction goes through the
    noise parameterisation and back, in float32, as there. `steps` model calls. Returns (z, z)."""
    model = Predictor(denoise, Grid.original_v2(ns, steps), x_start, mask, via_eps=True)
    z = walk(model, Rule(dpm_step, order, from_prediction=True), z, progress=progress)
    return z, z


# ---------------------------------------------------------------------------- the registry
# Each sampler has an options dataclass (what only it reads) and a runner that turns the training
# schedule and a start timestep into the sampler's own schedule. What every sampler reads (steps,
# start, absorption, clamping) is passed to the runner directly.

@dataclass
class AncestralOptions:
    variance: str = "small"  # noise of each step: "small" (beta~_t) or "large" (beta_t, the original's)


@dataclass
class DPMOptions:
    order: int = 2  # 1, 2 or 3 (the SDE solver: 1 or 2)
    skip: str = "logSNR"  # step spacing: uniform in "logSNR" or in time ("time_uniform")
    sde: bool = False  # solve the reverse SDE (SDE-DPM-Solver++) instead of the ODE
    final_call: bool = True  # read tokens from one more prediction of z_0 where the solve ends
    after_absorb: str = "first"  # a step after an absorption is first order; "keep": mix anyway
    remask: str = "random"  # which tokens an absorption takes: "random" or the least "confidence"


def run_ancestral(denoise, sched, z, x_start, mask, *, steps, t_start, options, **common):
    """Ancestral sampling over `steps` evenly spaced timesteps of the training schedule `sched`
    up to t_start (None: T - 1)."""
    absorb_rate = common.pop("absorb_rate")
    return ancestral_sample(denoise, sched, z, x_start, mask, variance=options.variance, denoise_rate=absorb_rate,
                            steps=steps, t_start=t_start, **common)


@dataclass
class OriginalV1Options:
    pass  # the original's choices are fixed: the whole chain, beta_t noise, rounding at every step


@dataclass
class OriginalV2Options:
    order: int = 2  # the original runs order 2


@torch.no_grad()
def original_v1_gapped(denoise, sched, z, x_start, mask, gap, clamp=None, progress=None):
    """The original v1 code's chain for fewer steps than T (its `--step` below the training
    steps): deterministic DDIM updates (eta 0) at every `gap`-th training timestep from T - 1 down,
    where each update from timestep n lands on the level of n - 1, not on the next timestep it
    visits (so it is not DDIM over the shorter grid). z_0 is predicted, rounded when `clamp` is
    given (the original rounds at every step), the noise recovered from it, and the source laid
    back after each update; coefficients in float32, as there. Tokens are read from the last
    state. Returns (z, z)."""
    acp = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float64)
    acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
    times = list(range(sched.num_steps))[::-1][::gap]
    x = _reimpose(z, x_start, mask)
    for n in (progress(times) if progress else times):
        z0 = denoise(x, torch.full((x.shape[0],), float(n), device=x.device))
        if clamp is not None:
            z0 = clamp(z0)
        a_prev = acp_prev[n].float()
        eps = (torch.sqrt(1.0 / acp[n]).float() * x - z0) / torch.sqrt(1.0 / acp[n] - 1).float()
        x = _reimpose(z0 * torch.sqrt(a_prev) + torch.sqrt(1 - a_prev) * eps, x_start, mask)
    return x, x


def run_original_v1(denoise, sched, z, x_start, mask, *, steps, t_start, options, **common):
    """The DiffuSeq papers' ancestral decoding as the original code runs it: every one of the T
    steps, noise of variance beta_t ("large"), the posterior mean taken as if m were 0, and (for
    DiffuSeq-v2 models) each target token absorbed into m with probability denoise_rate *
    sqrt(beta_t); rounding at every step unless --clamping false. With fewer steps than T, the
    v1 code's own shorter chain (original_v1_gapped, every T // steps-th timestep), which only
    its v1 code has."""
    if t_start is not None:
        raise ValueError("original-v1 decodes from noise only (--init noise)")
    absorb_rate = common.pop("absorb_rate")
    if steps != sched.num_steps:
        if not 1 <= steps < sched.num_steps:
            raise ValueError(f"original-v1 takes 1 to {sched.num_steps} steps, not {steps}")
        if common.get("m") is not None:
            raise ValueError(f"original-v1 with {steps} of {sched.num_steps} steps is the v1 code's shorter "
                             "chain, which DiffuSeq-v2's code lacks: decode a v2 model with all "
                             f"{sched.num_steps} steps, or with --sampler original-v2")
        return original_v1_gapped(denoise, sched, z, x_start, mask, sched.num_steps // steps,
                                  clamp=common.get("clamp"), progress=common.get("progress"))
    return ancestral_sample(denoise, sched, z, x_start, mask, variance="large", denoise_rate=absorb_rate,
                            centre=False, **common)


def run_original_v2(denoise, sched, z, x_start, mask, *, steps, t_start, options, m=None, progress=None,
                    **common):
    """DiffuSeq-v2's own solver (original_v2_solve) on the training schedule; it starts from N(0, I)
    on the target, so a start drawn around m is moved back."""
    if t_start is not None:
        raise ValueError("original-v2 decodes from noise only (--init noise)")
    if m is not None:
        z = z - _offset(mask, m)
    return original_v2_solve(denoise, NoiseScheduleVP(sched.alphas_cumprod), z, x_start, mask, steps=steps,
                             order=options.order, progress=progress)


def run_dpm(denoise, sched, z, x_start, mask, *, steps, t_start, options, **common):
    """DPM-Solver++ on the continuous-time view of the training schedule `sched`, from training
    timestep t_start (None: T - 1)."""
    ns = NoiseScheduleVP(sched.alphas_cumprod)
    ts = None if t_start is None else (t_start + 1.0) / sched.num_steps
    return dpm_solver_sample(denoise, ns, z, x_start, mask, steps=steps, order=options.order, skip=options.skip,
                             t_start=ts, final_call=options.final_call, sde=options.sde,
                             after_absorb=options.after_absorb, remask=options.remask,
                             confidence=getattr(denoise, "confidence", None), **common)


@dataclass(frozen=True)
class Sampler:
    name: str
    options: type
    default_steps: int  # 0: every step of the training chain
    run: object
    about: str = ""
    clamps: object = None  # m -> whether rounding is on when nobody says (None: never)
    family: str = "gaussian"  # the model family it decodes (family.py)

    def steps(self, T):
        """The steps when nobody says, for a model of T training timesteps."""
        return self.default_steps or T


SAMPLERS = {s.name: s for s in (
    Sampler("ancestral", AncestralOptions, 50, run_ancestral, "ancestral sampling over evenly spaced steps",
            clamps=lambda m: m is None),
    Sampler("dpm", DPMOptions, 10, run_dpm, "multistep DPM-Solver++ (ODE or SDE), orders 1-3"),
    Sampler("original-v1", OriginalV1Options, 0, run_original_v1,
            "the DiffuSeq papers' ancestral decoding as the original code runs it (all T steps)",
            clamps=lambda m: True),
    Sampler("original-v2", OriginalV2Options, 10, run_original_v2,
            "DiffuSeq-v2's own solver as its code runs it"))}


def get_sampler(name):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None
