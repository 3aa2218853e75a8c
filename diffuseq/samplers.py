"""Samplers: pure functions from starting noise to a sample.

Each takes `denoise(z, t) -> z0_hat`, the model wrapped once into a data predictor (t are
training timesteps [B], possibly fractional), the starting z [B, L, D], the clean x part
`x_start` [B, L, D] with `mask` [B, L] (1 on y), and the absorbing state m (None = 0). The x
part is re-imposed from x_start after every step. Each returns (z, z0_hat): the final state and
the last prediction of z_0, from which tokens are read.
"""
from dataclasses import dataclass

import torch

from .diffusion import _offset, absorb, q_posterior_mean
from .schedule import DiscreteSchedule, NoiseScheduleVP


def _reimpose(z, x_start, mask):
    return torch.where(mask.unsqueeze(-1).bool(), z, x_start)


def clamps_at(t, clamp_step, clamp_first=True):
    """Whether the predicted z_0 is rounded at training timestep t: from T down to clamp_step
    (clamp_first, the original's default), or from clamp_step down to 0."""
    return t >= clamp_step if clamp_first else t <= clamp_step


def sampling_std(sched, n, variance="small"):
    """Standard deviation of the noise added at step n of an ancestral chain: "small" is the
    posterior's beta~_n; "large" is beta_n, the original's choice (its variance array is
    [beta~_1, beta_1, beta_2, ...]: beta~_1 only at n = 0, where no noise is added)."""
    if variance == "small":
        return float(sched.posterior_variance[n]) ** 0.5
    if variance == "large":
        return float(sched.posterior_variance[1] if n == 0 else sched.betas[n]) ** 0.5
    raise ValueError(f"unknown variance {variance!r}; choose small or large")


@torch.no_grad()
def ancestral_sample(denoise, sched, z, x_start, mask, m=None, clamp=None, clamp_step=0,
                     clamp_first=True, variance="small", denoise_rate=0.0, generator=None,
                     progress=None, centre=True):
    """Ancestral sampling over a (possibly respaced) DiscreteSchedule.

    At each step z_0 is predicted, replaced by its nearest word embedding (`clamp`, the rounding
    trick) where clamps_at(training timestep, clamp_step, clamp_first), and z_{t-1} drawn from
    N(posterior mean, sampling_std^2). With denoise_rate r > 0 and an absorbing state m, each y
    token is then absorbed into m with probability r times that standard deviation. centre=False
    takes the posterior mean c1 z0 + c2 z_t as if m were 0, as DiffuSeq-v2's code does.
    """
    z = _reimpose(z, x_start, mask)
    z0 = z
    steps = range(sched.num_steps - 1, -1, -1)
    for n in (progress(steps) if progress else steps):
        t = torch.full((z.shape[0],), n, device=z.device, dtype=torch.long)
        t_model = torch.full_like(t, int(sched.timestep_map[n]))
        z0 = denoise(z, t_model)
        if clamp is not None and clamps_at(sched.timestep_map[n], clamp_step, clamp_first):
            z0 = _reimpose(clamp(z0), x_start, mask)
        z = q_posterior_mean(sched, z0, z, t, m if centre else None)
        if n > 0:
            std = sampling_std(sched, n, variance)
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + std * noise
            if denoise_rate > 0 and m is not None:
                u = torch.rand(z.shape[:2], generator=generator, device=z.device)
                z = absorb(z, mask, m, torch.full_like(t, denoise_rate * std, dtype=z.dtype), u)
        z = _reimpose(z, x_start, mask)
    return z, z0


def solver_timesteps(ns, steps, skip="time_uniform", t_start=None):
    """steps + 1 continuous times from t_start (default T) down to eps, uniform in t or in
    logSNR lambda."""
    t_T = torch.tensor(ns.T if t_start is None else t_start, dtype=torch.float64)
    t_0 = torch.tensor(ns.eps, dtype=torch.float64)
    if skip == "time_uniform":
        return torch.linspace(float(t_T), ns.eps, steps + 1, dtype=torch.float64)
    if skip == "logSNR":
        lam = torch.linspace(float(ns.marginal_lambda(t_T)), float(ns.marginal_lambda(t_0)),
                             steps + 1, dtype=torch.float64)
        return ns.inverse_lambda(lam)
    raise ValueError(f"unknown skip type {skip!r}; choose time_uniform or logSNR")


def step_std(ns, s, t):
    """Standard deviation of the posterior q(z_t | z_s, z_0) of a VP process, s > t:
    sigma_t * sqrt(1 - exp(-2 h)), h = lambda_t - lambda_s. For a step of the discrete chain
    (s, t = (n + 1) / T, n / T) it is sqrt(beta~_n), the ancestral chain's "small" noise; it is
    also the noise of a first-order SDE-DPM-Solver++ step."""
    h = ns.marginal_lambda(t) - ns.marginal_lambda(s)
    return ns.marginal_std(t) * torch.sqrt(-torch.expm1(-2.0 * h))


def _dpm_sde_update(x, ts, t, history, order, ns, noise):
    """One SDE-DPM-Solver++ update (first order, or the multistep second order "2M") from ts[-1]
    to t: the solver of the reverse SDE in data prediction, which adds fresh noise of std
    step_std(ns, ts[-1], t) to every step."""
    lam_t, lam_s = ns.marginal_lambda(t), ns.marginal_lambda(ts[-1])
    h = lam_t - lam_s
    alpha_t = ns.marginal_alpha(t)
    c = lambda v: float(v)  # noqa: E731
    phi = -torch.expm1(-2.0 * h)  # 1 - exp(-2h)
    m0 = history[-1]
    x_t = c(ns.marginal_std(t) / ns.marginal_std(ts[-1]) * torch.exp(-h)) * x + c(alpha_t * phi) * m0
    if order >= 2:
        r0 = (lam_s - ns.marginal_lambda(ts[-2])) / h
        x_t = x_t + c(0.5 * alpha_t * phi / r0) * (m0 - history[-2])
    return x_t + c(step_std(ns, ts[-1], t)) * noise


def _dpm_update(x, ts, t, history, order, ns):
    """One multistep DPM-Solver++ update from ts[-1] to t over the data predictions `history`
    (newest last) at times ts. Coefficients are computed in float64, then applied as scalars."""
    lam = lambda s: ns.marginal_lambda(s)  # noqa: E731
    lam_t, lam_s = lam(t), lam(ts[-1])
    h = lam_t - lam_s
    alpha_t = ns.marginal_alpha(t)
    sigma_ratio = ns.marginal_std(t) / ns.marginal_std(ts[-1])
    phi_1 = torch.expm1(-h)
    c = lambda v: float(v)  # noqa: E731
    m0 = history[-1]
    x_t = c(sigma_ratio) * x - c(alpha_t * phi_1) * m0
    if order >= 2:
        h0 = lam_s - lam(ts[-2])
        r0 = h0 / h
        d1_0 = (m0 - history[-2]) / c(r0)
        if order == 2:
            x_t = x_t - c(0.5 * alpha_t * phi_1) * d1_0
        else:
            h1 = lam(ts[-2]) - lam(ts[-3])
            r1 = h1 / h
            d1_1 = (history[-2] - history[-3]) / c(r1)
            d1 = d1_0 + c(r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / c(r0 + r1)
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            x_t = x_t + c(alpha_t * phi_2) * d1 - c(alpha_t * phi_3) * d2
    return x_t


def least_confident(conf, mask, share):
    """[B, L] float: 0 on the round(share * n) target positions (mask [B, L]) of lowest confidence
    conf [B, L] of each example (n: its target positions), 1 elsewhere."""
    n = mask.sum(1)
    k = torch.round(share * n.to(conf.dtype)).long()
    rank = conf.masked_fill(~mask.bool(), float("inf")).argsort(1).argsort(1)  # 0 = least sure
    return (~(rank < k[:, None])).to(conf.dtype)


@torch.no_grad()
def dpm_solver_sample(denoise, ns, z, x_start, mask, m=None, steps=10, order=2,
                      skip="time_uniform", t_start=None, clamp=None, clamp_step=0, clamp_first=True,
                      progress=None, final_call=True, absorb_rate=0.0, sde=False, generator=None,
                      after_absorb="first", remask="random", confidence=None):
    """Multistep DPM-Solver++ (data prediction) of order 1, 2 or 3 on the probability-flow ODE.

    `ns` is a NoiseScheduleVP; the solve runs from continuous time t_start (default T) down.
    `clamp` rounds each data prediction as in ancestral_sample (where clamps_at). The solve runs in coordinates w = z - m (on y), where the process
    is the usual VP one toward 0. The first steps use lower orders to warm up the history; with
    fewer than 10 steps the last steps lower the order too, which keeps them stable. The solve
    ends at t = 1/T, where z_t is z_0 up to noise of the first timestep's level (std 0.12 with
    the sqrt schedule at T = 2000). With final_call, one more prediction there gives z_0
    (steps + 1 model calls; on the Bible it scored 0.6 BLEU more with 10 steps); without it,
    z_t itself is the result (`steps` calls, as the original's solver).

    absorb_rate r > 0 (with an absorbing state m) brings DiffuSeq-v2's discrete noise into the
    solve: after each update from s to t but the last, each y token is replaced by m with
    probability r * step_std(s, t), the rule of the ancestral chain (whose step n absorbs with
    probability r * sqrt(beta~_n), the same std for a one-step gap). sde=True solves the reverse
    SDE instead of the ODE (SDE-DPM-Solver++, order 1 or 2), with fresh Gaussian noise each step.
    Both draw from `generator`. With r = 0 and sde False the solve is deterministic.
    after_absorb: a multistep update mixes the last two predictions of z_0, and with absorption
    the older one was made before the tokens were re-masked; "keep" mixes them all the same,
    "first" makes the step after an absorption first order for the examples that lost tokens.
    remask: which tokens an absorption takes. "random": each independently, as above;
    "confidence": the same expected number (round(p * target tokens) of each example), those
    the model is least sure of, by confidence(z0) [B, L] of the last prediction (the re-masking
    of mask-predict and MaskGIT); it draws nothing.
    Returns (z at the end of the solve, z_0)."""
    if order not in (1, 2, 3):
        raise ValueError("DPM-Solver++ order must be 1, 2 or 3")
    if sde and order == 3:
        raise ValueError("SDE-DPM-Solver++ has orders 1 and 2")
    off = _offset(mask, m)
    shift = (lambda w: w) if off is None else (lambda w: w + off)
    unshift = (lambda x: x) if off is None else (lambda x: x - off)
    w_start = unshift(x_start)  # equals x_start: the offset is zero on the x part

    # times and coefficients stay on the host in float64: no device sync inside the loop
    ts = solver_timesteps(ns, steps, skip, t_start).cpu()
    B = z.shape[0]

    def data_pred(w, t):
        t_disc = ns.discrete_timestep(t)
        t_model = t_disc.float().expand(B).to(w.device, non_blocking=True)
        z0 = denoise(shift(w), t_model)
        if clamp is not None and clamps_at(float(t_disc), clamp_step, clamp_first):
            z0 = _reimpose(clamp(z0), x_start, mask)
        return unshift(z0)

    if after_absorb not in ("keep", "first"):
        raise ValueError(f"unknown after_absorb {after_absorb!r}; choose keep or first")
    if remask not in ("random", "confidence"):
        raise ValueError(f"unknown remask {remask!r}; choose random or confidence")
    if remask == "confidence" and confidence is None:
        raise ValueError("remask='confidence' needs the model's confidence function")
    w = _reimpose(unshift(z), w_start, mask)
    hist_t, hist_x0 = [ts[0]], [data_pred(w, ts[0])]
    hit = None  # [B] bool: which examples the last step absorbed tokens of
    idx = range(1, steps + 1)
    for i in (progress(idx) if progress else idx):
        step_order = min(order, i)
        if steps < 10:
            step_order = min(step_order, steps + 1 - i)

        def update(k):
            if sde:
                return _dpm_sde_update(w, hist_t, ts[i], hist_x0, k, ns, noise)
            return _dpm_update(w, hist_t, ts[i], hist_x0, k, ns)

        noise = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype) if sde else None
        w_next = update(step_order)
        if after_absorb == "first" and step_order > 1 and hit is not None and hit.any():
            w_next = torch.where(hit.view(-1, 1, 1), update(1), w_next)
        w = w_next
        hit = None
        if absorb_rate > 0 and m is not None and i < steps:
            # in coordinates w = z - m, the absorbing state is 0
            p = absorb_rate * float(step_std(ns, hist_t[-1], ts[i]))
            if remask == "confidence":
                u = least_confident(confidence(shift(hist_x0[-1])), mask, p)
                p = 0.5  # u is 0 on the tokens to take, 1 elsewhere
            else:
                u = torch.rand(w.shape[:2], generator=generator, device=w.device)
            w = absorb(w, mask, torch.zeros_like(m), torch.full((w.shape[0],), p, device=w.device), u)
            hit = ((u < p) & mask.bool()).any(1)  # the examples that lost tokens to m
        w = _reimpose(w, w_start, mask)
        if i == steps and not final_call:
            break
        hist_t.append(ts[i])
        hist_x0.append(data_pred(w, ts[i]))  # at i == steps (final_call) this is the final z_0
        hist_t, hist_x0 = hist_t[-3:], hist_x0[-3:]
    z0 = hist_x0[-1] if final_call else w
    return shift(w), _reimpose(shift(z0), x_start, mask)


@torch.no_grad()
def original_v2_solve(denoise, ns, z, x_start, mask, steps=10, order=2, progress=None):
    """DiffuSeq-v2's own solver, as its code runs it (not DPM-Solver++ as published): a grid
    uniform in time from t = 1 to 1/T; the model told the time t * T, one training step above the
    level alpha_t of its input (whose training timestep is t * T - 1); before every update the
    state is replaced by the model's prediction of z_0 (the source laid back in), so the starting
    noise reaches only the first call; multistep updates of order up to `order` (lower at the
    start, and at the end with fewer than 10 steps); no absorbing state (the start is N(0, I)
    whatever m is), no rounding, no final call: tokens are read from the last update's state.
    The prediction goes through the noise parameterisation and back, in float32, as there.
    `steps` model calls. Returns (z, z): the state is what is read."""
    T = ns.num_steps
    ts = torch.linspace(1.0, 1.0 / T, steps + 1, dtype=torch.float32).double()
    B = z.shape[0]

    def x0_hat(x, t):
        out = denoise(x, (t * T).float().expand(B).to(x.device))
        a, s = ns.marginal_alpha(t).float().item(), ns.marginal_std(t).float().item()
        eps = (x - a * out) / s
        return _reimpose((x - s * eps) / a, x_start, mask)

    x = x0_hat(_reimpose(z, x_start, mask), ts[0])
    hist_t, hist_x0 = [ts[0]], [x]
    idx = range(1, steps + 1)
    for k in (progress(idx) if progress else idx):
        p = min(order, k)
        if steps < 10:
            p = min(p, steps + 1 - k)
        x = _reimpose(_dpm_update(x, hist_t, ts[k], hist_x0, p, ns), x_start, mask)
        if k < steps:
            x = x0_hat(x, ts[k])
            hist_t, hist_x0 = (hist_t + [ts[k]])[-3:], (hist_x0 + [x])[-3:]
    return x, x


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
    if t_start is not None:
        sched = DiscreteSchedule(sched.betas[:t_start + 1])
    sched = sched.respace(min(steps, sched.num_steps))
    absorb_rate = common.pop("absorb_rate")
    return ancestral_sample(denoise, sched, z, x_start, mask, variance=options.variance,
                            denoise_rate=absorb_rate, **common)


@dataclass
class OriginalV1Options:
    pass  # the original's choices are fixed: the whole chain, beta_t noise, rounding at every step


@dataclass
class OriginalV2Options:
    order: int = 2  # the original runs order 2


def run_original_v1(denoise, sched, z, x_start, mask, *, steps, t_start, options, **common):
    """The DiffuSeq papers' ancestral decoding as the original code runs it: every one of the T
    steps, noise of variance beta_t ("large"), the posterior mean taken as if m were 0, and (for
    DiffuSeq-v2 models) each target token absorbed into m with probability denoise_rate *
    sqrt(beta_t); rounding at every step unless --clamping false."""
    if steps != sched.num_steps:
        raise ValueError(f"original-v1 runs all {sched.num_steps} steps of the chain, as the papers decoded "
                         "(its code has no correct shorter chain); for fewer steps use --sampler ancestral")
    if t_start is not None:
        raise ValueError("original-v1 decodes from noise only (--init noise)")
    absorb_rate = common.pop("absorb_rate")
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
