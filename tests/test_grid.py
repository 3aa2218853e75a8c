"""The grid every sampler walks, and the update rules over it, against closed forms."""
import pytest
import torch

from diffuseq.grid import Grid, posterior_std, solver_timesteps
from diffuseq.samplers import Absorb, Predictor, dpm_step, posterior_step, small_std
from diffuseq.schedule import DiscreteSchedule, NoiseScheduleVP


def _sched(T=200):
    sched = DiscreteSchedule.from_name("sqrt", T)
    return sched, NoiseScheduleVP(sched.alphas_cumprod)


def test_chain_grid_visits_the_kept_timesteps_then_a_clean_point():
    sched, _ = _sched()
    g = Grid.chain(sched, steps=5, t_start=120)
    assert g.steps == 5
    assert g.t_model[:5].tolist() == [120, 90, 60, 30, 0]
    for i, t in enumerate([120, 90, 60, 30, 0]):
        assert float(g.alpha[i]) == pytest.approx(sched.alphas_cumprod[t] ** 0.5, rel=1e-12)
        assert float(g.sigma[i]) == pytest.approx((1 - sched.alphas_cumprod[t]) ** 0.5, rel=1e-12)
    assert float(g.alpha[5]) == 1.0 and float(g.sigma[5]) == 0.0 and g.lam[5] == float("inf")


def test_solver_grid_tells_the_model_the_training_timestep_and_original_v2_one_later():
    _, ns = _sched()
    g = Grid.solver(ns, 4, "logSNR")
    ts = solver_timesteps(ns, 4, "logSNR")
    torch.testing.assert_close(g.t_model, ts * 200 - 1)
    torch.testing.assert_close(g.lam, ns.marginal_lambda(ts))
    v2 = Grid.original_v2(ns, 4)
    torch.testing.assert_close(v2.t_model, v2.level + 1)
    assert float(v2.t_model[0]) == 200.0 and float(v2.t_model[-1]) == pytest.approx(1.0)


def test_posterior_step_is_the_ddpm_posterior_and_its_std_is_beta_tilde():
    """Order 1 on the chain: c1 z0 + c2 z_t with c1 = beta sqrt(abar_prev) / (1 - abar),
    c2 = (1 - abar_prev) sqrt(1 - beta) / (1 - abar); the std is sqrt(beta~) for every step."""
    sched, _ = _sched(50)
    g = Grid.chain(sched)
    x, x0 = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
    for i in range(1, 51):
        n = 50 - i  # the step from timestep n to n - 1 (to the clean point when n = 0)
        a, b = sched.alphas_cumprod[n], sched.betas[n]
        a_prev = sched.alphas_cumprod[n - 1] if n > 0 else 1.0
        want = b * a_prev ** 0.5 / (1 - a) * x0 + (1 - a_prev) * (1 - b) ** 0.5 / (1 - a) * x
        torch.testing.assert_close(posterior_step(g, i, x, [x0]), want, rtol=1e-7, atol=1e-9)
        tilde = b * (1 - a_prev) / (1 - a)
        assert small_std(g, i) == pytest.approx(tilde ** 0.5, rel=1e-7, abs=1e-12)
    assert float(posterior_std(torch.tensor(0.0), torch.tensor(float("inf")))) == 0.0


def test_first_order_ode_step_is_ddim():
    """DPM-Solver++ order 1 is DDIM: x_t = alpha_t x0 + sigma_t eps_hat, eps_hat = (x_s - alpha_s x0) / sigma_s."""
    _, ns = _sched()
    g = Grid.solver(ns, 6, "time_uniform")
    x, x0 = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    for i in range(1, 7):
        eps = (x - g.alpha[i - 1] * x0) / g.sigma[i - 1]
        torch.testing.assert_close(dpm_step(g, i, x, [x0]), g.alpha[i] * x0 + g.sigma[i] * eps)


def test_multistep_steps_against_the_exact_solution_for_predictions_linear_in_lambda():
    """For x0(lambda) = a + b lambda the ODE's solution from s to t is, integrated by hand,
    x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^-h) x0_s + alpha_t b (h - 1 + e^-h): the 3M step
    (whose second difference is then 0) gives it exactly, 2M within O(h^3), closer than order 1."""
    _, ns = _sched()
    g = Grid.solver(ns, 6, "logSNR")
    a, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x0 = lambda j: a + b * g.lam[j]  # noqa: E731
    i, x = 4, torch.randn(5, dtype=torch.float64)
    h = g.h(i)
    exact = g.sigma[i] / g.sigma[i - 1] * x + g.alpha[i] * (-torch.expm1(-h)) * x0(i - 1) \
        + g.alpha[i] * b * (h - 1 + torch.exp(-h))
    hist = [x0(i - 3), x0(i - 2), x0(i - 1)]
    torch.testing.assert_close(dpm_step(g, i, x, hist, order=3), exact, rtol=1e-9, atol=1e-12)
    err = [float((dpm_step(g, i, x, hist, order=k) - exact).abs().max()) for k in (1, 2)]
    assert err[1] < err[0] / 3 and err[0] > 1e-3


def test_absorb_takes_the_measured_share_of_target_tokens():
    """The correction alone, on a step of a solver grid: the share of target tokens sent to the
    absorbing state is rate * the step's posterior std (within 4 standard errors), the source is
    never touched, and the examples that lost a token are the ones it reports."""
    _, ns = _sched(2000)
    g = Grid.solver(ns, 4, "logSNR")
    B, L, D = 300, 40, 3
    mask = torch.zeros(B, L)
    mask[:, 8:] = 1
    m = torch.tensor([1.5, -2.0, 0.5])
    model = Predictor(lambda z, t: z, g, torch.zeros(B, L, D), mask, m=m, centre=False)
    x = torch.randn(B, L, D)
    rate = 0.6
    out, hit = Absorb(rate)(x, model, 1, torch.Generator().manual_seed(0))
    p = rate * small_std(g, 1)
    assert 0.05 < p < 0.6
    at_m = (out == m).all(-1)
    share = at_m[mask.bool()].float().mean().item()
    n = int(mask.sum())
    assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5, (share, p)
    assert not at_m[~mask.bool()].any()
    assert torch.equal(hit, at_m.any(1))
    assert torch.equal(out[~at_m], x[~at_m])
