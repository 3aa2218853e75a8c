"""Noise schedules.

Two views of one schedule:

* `DiscreteSchedule`: the betas of the T-step Markov chain used for training and ancestral
  sampling, with every closed form of q(z_t | z_0) and of the posterior q(z_{t-1} | z_t, z_0)
  precomputed once (float64) and looked up by timestep.
* `NoiseScheduleVP`: the same schedule seen as a continuous-time variance-preserving SDE on
  t in (0, 1], with alpha_t, sigma_t, lambda_t = log(alpha_t / sigma_t) and the inverse of
  lambda, as DPM-Solver needs them. log(alpha_t) is interpolated linearly between the discrete
  steps, so at t = (n + 1) / T it equals 0.5 * log(alphas_cumprod[n]) exactly.
"""
import math

import numpy as np
import torch

SCHEDULES = ("sqrt", "cosine", "linear")


def betas_from_alpha_bar(num_steps, alpha_bar, max_beta=0.999):
    """Betas of a chain whose cumulative product follows alpha_bar(t) on t in [0, 1]."""
    betas = []
    for i in range(num_steps):
        t1, t2 = i / num_steps, (i + 1) / num_steps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


def get_betas(name, num_steps):
    """Betas of a named schedule over `num_steps` steps, float64 array [T]."""
    if name == "sqrt":  # Diffusion-LM: noise rises fast at first, which suits word embeddings
        return betas_from_alpha_bar(num_steps, lambda t: 1 - math.sqrt(t + 0.0001))
    if name == "cosine":
        return betas_from_alpha_bar(
            num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    if name == "linear":  # scaled so that any T spans the range of the 1000-step original
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def space_timesteps(num_steps, k):
    """K timesteps evenly spread over 0..T-1, always keeping the first and the last."""
    if not 1 <= k <= num_steps:
        raise ValueError(f"cannot take {k} steps out of a {num_steps}-step schedule")
    if k == 1:
        return [num_steps - 1]
    stride = (num_steps - 1) / (k - 1)
    return sorted({round(i * stride) for i in range(k)})


class DiscreteSchedule:
    """Closed forms of a T-step diffusion chain.

    `timestep_map[n]` is the training timestep that step n of this chain stands for (the identity
    unless the chain was respaced); the denoiser is always called with training timesteps.
    """

    def __init__(self, betas, timestep_map=None):
        b = np.asarray(betas, dtype=np.float64)
        assert b.ndim == 1 and (b > 0).all() and (b <= 1).all()
        self.betas = b
        self.num_steps = len(b)
        self.timestep_map = np.arange(len(b)) if timestep_map is None else np.asarray(timestep_map)
        a = 1.0 - b
        self.alphas_cumprod = np.cumprod(a)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        # q(z_{t-1} | z_t, z_0) = N(coef1 z_0 + coef2 z_t, posterior_variance)
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # variance is 0 at t=0: clip the log to the next value, as the sample there is the mean
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(a) / (1.0 - self.alphas_cumprod))
        self._cache = {}

    @classmethod
    def from_name(cls, name, num_steps):
        return cls(get_betas(name, num_steps))

    def respace(self, k):
        """The chain that visits only K evenly spaced timesteps, with betas chosen so that its
        alphas_cumprod equal the original ones at the kept timesteps."""
        keep = space_timesteps(self.num_steps, k)
        abar = self.alphas_cumprod[keep]
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        return DiscreteSchedule(betas, timestep_map=self.timestep_map[keep])

    def tensor(self, name, device):
        """A precomputed array as a float32 tensor on `device`, cached."""
        key = (name, str(device))
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(getattr(self, name), dtype=torch.float32, device=device)
        return self._cache[key]

    def at(self, name, t, ndim=3):
        """arr[t] for a batch of integer timesteps t [B], shaped [B, 1, ..., 1] (ndim dims)."""
        out = self.tensor(name, t.device)[t]
        return out.view(-1, *([1] * (ndim - 1)))


def _interp(x, xp, fp):
    """Piecewise-linear interpolation of increasing knots xp -> fp at x (extrapolates at ends)."""
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


class NoiseScheduleVP:
    """Continuous-time view of a discrete schedule on t in [1/T, 1].

    alpha_t = exp(log_alpha(t)), sigma_t = sqrt(1 - alpha_t^2), lambda_t = log alpha_t - log sigma_t.
    Continuous time t corresponds to the training timestep t * T - 1.
    """

    def __init__(self, alphas_cumprod, device="cpu"):
        n = len(alphas_cumprod)
        self.num_steps = n
        self.T = 1.0
        self.eps = 1.0 / n
        self.t_array = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)[1:].to(device)
        self.log_alpha_array = 0.5 * torch.log(
            torch.as_tensor(alphas_cumprod, dtype=torch.float64)).to(device)

    def marginal_log_mean_coeff(self, t):
        return _interp(t.double(), self.t_array, self.log_alpha_array)

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_alpha = self.marginal_log_mean_coeff(t)
        log_sigma = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))
        return log_alpha - log_sigma

    def inverse_lambda(self, lam):
        """The t at which lambda_t = lam."""
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam, dtype=torch.float64), -2.0 * lam.double())
        return _interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))

    def discrete_timestep(self, t):
        """Training timestep (float) for continuous time t."""
        return t * self.num_steps - 1.0
