"""The grid a sampler walks: its points, noisiest first, each with the time the model is told,
the training timestep of its noise level, alpha, sigma and lambda = log(alpha / sigma), built
once in float64 on the host (so the loop never waits on a device).

Every sampler is a walk over such a grid: the ancestral chain over training timesteps (ending at
a clean point, alpha 1 and sigma 0), DPM-Solver++ over continuous times uniform in time or in
lambda, DiffuSeq-v2's own solver over its grid. A step goes from point i - 1 (s) to point i (t),
h = lambda_t - lambda_s; the posterior q(z_t | z_s, z_0) of the process has
mean (sigma_t / sigma_s) e^-h z_s + alpha_t (1 - e^-2h) z_0 and std sigma_t sqrt(1 - e^-2h).
"""
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .schedule import space_timesteps


@dataclass(frozen=True)
class Grid:
    t_model: torch.Tensor  # [K + 1] the time input of the model at each point (training timesteps)
    level: torch.Tensor  # [K + 1] the training timestep of each point's noise level (clamping reads it)
    alpha: torch.Tensor  # [K + 1]
    sigma: torch.Tensor  # [K + 1]

    @cached_property
    def lam(self):
        """lambda = log(alpha / sigma): +inf at a clean point."""
        return torch.log(self.alpha) - torch.log(self.sigma)

    @property
    def steps(self):
        return len(self.alpha) - 1

    def h(self, i):
        """lambda_t - lambda_s of the step from point i - 1 to point i."""
        lam = self.lam
        return lam[i] - lam[i - 1]

    @classmethod
    def chain(cls, sched, steps=None, t_start=None):
        """The ancestral chain of a DiscreteSchedule (possibly respaced): `steps` of its timesteps,
        evenly spaced up to t_start (None: its last), then the clean point."""
        abar, tmap = sched.alphas_cumprod, np.asarray(sched.timestep_map)
        if t_start is not None:
            abar, tmap = abar[:t_start + 1], tmap[:t_start + 1]
        keep = space_timesteps(len(abar), min(steps or len(abar), len(abar)))[::-1]
        level = torch.tensor(np.append(tmap[keep], -1), dtype=torch.float64)
        abar = torch.tensor(np.append(abar[keep], 1.0), dtype=torch.float64)
        return cls(level, level, abar.sqrt(), (1.0 - abar).sqrt())

    @classmethod
    def solver(cls, ns, steps, skip="time_uniform", t_start=None):
        """steps + 1 continuous times of a NoiseScheduleVP from t_start (default 1) down to 1/T, the
        model told the training timestep of each (t * T - 1)."""
        return cls.at_times(ns, solver_timesteps(ns, steps, skip, t_start))

    @classmethod
    def original_v2(cls, ns, steps):
        """DiffuSeq-v2's own grid: uniform in time from 1 to 1/T (a float32 linspace, as its code
        makes it), the model told t * T, one training step above the level of its input."""
        ts = torch.linspace(1.0, 1.0 / ns.num_steps, steps + 1, dtype=torch.float32).double()
        return cls.at_times(ns, ts, late=True)

    @classmethod
    def at_times(cls, ns, ts, late=False):
        level = ns.discrete_timestep(ts)
        return cls(ts * ns.num_steps if late else level, level, ns.marginal_alpha(ts), ns.marginal_std(ts))


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


def posterior_std(sigma_t, h):
    """Standard deviation of q(z_t | z_s, z_0), s noisier than t, h = lambda_t - lambda_s:
    sigma_t sqrt(1 - e^-2h). For one step of the discrete chain it is sqrt(beta~_n)."""
    return sigma_t * torch.sqrt(-torch.expm1(-2.0 * h))


def step_std(ns, s, t):
    """posterior_std between continuous times s > t of a NoiseScheduleVP."""
    return posterior_std(ns.marginal_std(t), ns.marginal_lambda(t) - ns.marginal_lambda(s))
