import math

import numpy as np
import pytest
import torch

from diffuseq.schedule import DiscreteSchedule, NoiseScheduleVP, get_betas, space_timesteps


@pytest.mark.parametrize("name", ["sqrt", "cosine", "linear"])
def test_betas_are_valid_and_alpha_bar_decreases(name):
    b = get_betas(name, 2000)
    assert b.shape == (2000,) and (b > 0).all() and (b <= 0.999).all()
    abar = np.cumprod(1 - b)
    assert (np.diff(abar) < 0).all() and abar[-1] < 1e-3


def test_sqrt_schedule_follows_its_closed_form():
    # alpha_bar(t) = 1 - sqrt(t + 1e-4), and the chain's cumprod telescopes to f(t)/f(0)
    T = 100
    abar = np.cumprod(1 - get_betas("sqrt", T))
    f = lambda t: 1 - math.sqrt(t + 1e-4)  # noqa: E731
    for n in (0, 10, 50, 90):
        assert abar[n] == pytest.approx(f((n + 1) / T) / f(0), rel=1e-9)


def test_respacing_full_length_is_identity():
    s = DiscreteSchedule.from_name("sqrt", 500)
    r = s.respace(500)
    np.testing.assert_allclose(r.betas, s.betas, rtol=1e-10, atol=1e-14)
    assert list(r.timestep_map) == list(range(500))


@pytest.mark.parametrize("k", [2, 7, 50, 200])
def test_respaced_alphas_cumprod_match_at_kept_timesteps(k):
    s = DiscreteSchedule.from_name("cosine", 2000)
    r = s.respace(k)
    keep = space_timesteps(2000, k)
    assert len(keep) == k and keep[0] == 0 and keep[-1] == 1999
    np.testing.assert_allclose(r.alphas_cumprod, s.alphas_cumprod[keep], rtol=1e-6)
    assert list(r.timestep_map) == keep


def test_posterior_coefficients_match_bayes_rule():
    # q(z_{t-1}|z_t,z_0) for scalar Gaussians, by completing the square
    s = DiscreteSchedule.from_name("linear", 50)
    for n in (1, 10, 49):
        a, abar, abar_prev = 1 - s.betas[n], s.alphas_cumprod[n], s.alphas_cumprod_prev[n]
        prec = a / (1 - a) + 1 / (1 - abar_prev)
        var = 1 / prec
        assert s.posterior_variance[n] == pytest.approx(var, rel=1e-9)
        assert s.posterior_mean_coef2[n] == pytest.approx(var * math.sqrt(a) / (1 - a), rel=1e-9)
        assert s.posterior_mean_coef1[n] == pytest.approx(var * math.sqrt(abar_prev) / (1 - abar_prev), rel=1e-9)


def test_continuous_schedule_matches_discrete_at_grid_and_inverts_lambda():
    s = DiscreteSchedule.from_name("sqrt", 2000)
    ns = NoiseScheduleVP(s.alphas_cumprod)
    n = torch.tensor([0, 1, 999, 1999])
    t = (n.double() + 1) / 2000
    np.testing.assert_allclose(ns.marginal_alpha(t).numpy() ** 2, s.alphas_cumprod[n.numpy()], rtol=1e-10)
    np.testing.assert_allclose((ns.marginal_alpha(t) ** 2 + ns.marginal_std(t) ** 2).numpy(), 1.0)
    tt = torch.linspace(ns.eps, 1.0, 37, dtype=torch.float64)
    np.testing.assert_allclose(ns.inverse_lambda(ns.marginal_lambda(tt)).numpy(), tt.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ns.discrete_timestep(t).numpy(), n.numpy(), atol=1e-9)
