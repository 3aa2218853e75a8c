"""Samplers against closed forms.

For data x0 ~ N(mu, s^2) per coordinate the exact x0-predictor is
E[x0 | x_t] = mu + k_t (x_t - alpha_t mu), k_t = alpha_t s^2 / (alpha_t^2 s^2 + sigma_t^2),
and the probability-flow ODE maps x_T to
x_t = alpha_t mu + sqrt(v_t / v_T) (x_T - alpha_T mu), v_t = alpha_t^2 s^2 + sigma_t^2.
"""
import pytest
import torch

from diffuseq.samplers import ancestral_sample, dpm_solver_sample
from diffuseq.schedule import DiscreteSchedule, NoiseScheduleVP

MU, S, T = 0.7, 0.5, 1000


@pytest.fixture(scope="module")
def setup():
    sched = DiscreteSchedule.from_name("sqrt", T)
    ns = NoiseScheduleVP(sched.alphas_cumprod)

    def gaussian_x0(z, t):  # t: training timesteps, possibly fractional
        tc = (t.double() + 1) / T
        a = ns.marginal_alpha(tc).view(-1, 1, 1).float()
        sg = ns.marginal_std(tc).view(-1, 1, 1).float()
        return MU + a * S ** 2 / (a ** 2 * S ** 2 + sg ** 2) * (z - a * MU)

    return sched, ns, gaussian_x0


def _closed_final_var(sched):
    # both samplers end with the x0-prediction at the first timestep
    a0, s0 = sched.sqrt_alphas_cumprod[0], sched.sqrt_one_minus_alphas_cumprod[0]
    v0 = a0 ** 2 * S ** 2 + s0 ** 2
    return (a0 * S ** 2 / v0) ** 2 * v0


def test_dpm_solver_matches_ancestral_1000_steps_and_closed_form(setup):
    sched, ns, f = setup
    g = torch.Generator().manual_seed(0)
    shape = (2000, 4, 4)
    zeros, mask = torch.zeros(shape), torch.ones(shape[:2])
    _, anc = ancestral_sample(f, sched, torch.randn(shape, generator=g), zeros, mask, generator=g)
    closed = _closed_final_var(sched)
    for steps in (10, 20):
        _, dpm = dpm_solver_sample(f, ns, torch.randn(shape, generator=g), zeros, mask,
                                   steps=steps, order=2, skip="logSNR")
        # stated tolerance: means within 0.03, variances within 10% of the 1000-step sampler
        assert abs(dpm.mean().item() - anc.mean().item()) < 0.03
        assert dpm.var().item() == pytest.approx(anc.var().item(), rel=0.10)
        assert abs(dpm.mean().item() - MU) < 0.03
    assert dpm.var().item() == pytest.approx(closed, rel=0.05)  # 20 steps
    assert anc.var().item() == pytest.approx(closed, rel=0.10)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_error_shrinks_with_steps(setup, order):
    sched, ns, f = setup
    xT = torch.randn(256, 2, 4, generator=torch.Generator().manual_seed(1))
    one = torch.tensor([1.0], dtype=torch.float64)
    eps = torch.tensor([ns.eps], dtype=torch.float64)
    vt = lambda t: float(ns.marginal_alpha(t)) ** 2 * S ** 2 + float(ns.marginal_std(t)) ** 2  # noqa: E731
    exact = float(ns.marginal_alpha(eps)) * MU + (vt(eps) / vt(one)) ** 0.5 * (
        xT - float(ns.marginal_alpha(one)) * MU)
    zeros, mask = torch.zeros_like(xT), torch.ones(xT.shape[:2])
    errs = []
    for steps in (10, 40, 80, 160):
        z, _ = dpm_solver_sample(f, ns, xT, zeros, mask, steps=steps, order=order, skip="logSNR")
        errs.append((z - exact).abs().max().item())
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    # 4x the steps divides the error by about 4**order (stated bounds: 3, 8, 16)
    assert errs[1] / errs[3] > {1: 3.0, 2: 8.0, 3: 16.0}[order], errs
    assert errs[-1] < {1: 0.05, 2: 1e-3, 3: 1e-3}[order], errs


def _oracle_setup(with_m):
    torch.manual_seed(0)
    V, D, B, L = 30, 16, 5, 12
    # rows of equal norm, so the tied-logits argmax of a row is the row itself
    emb = torch.nn.functional.normalize(torch.randn(V, D), dim=-1) * 4
    ids = torch.randint(5, V, (B, L))
    mask = torch.zeros(B, L, dtype=torch.long)
    mask[:, 4:] = 1
    x_start = torch.where(mask.unsqueeze(-1).bool(), torch.zeros(B, L, D), emb[ids])
    m = torch.randn(D) if with_m else None
    truth = emb[ids]
    oracle = lambda z, t: truth  # noqa: E731
    z = torch.randn(B, L, D) + (0 if m is None else m)
    return emb, ids, mask, x_start, m, oracle, z


@pytest.mark.parametrize("with_m", [False, True])
@pytest.mark.parametrize("k", [2000, 50, 7])
def test_ancestral_with_oracle_returns_reference(with_m, k):
    emb, ids, mask, x_start, m, oracle, z = _oracle_setup(with_m)
    sched = DiscreteSchedule.from_name("sqrt", 2000).respace(k)
    _, z0 = ancestral_sample(oracle, sched, z, x_start, mask, m=m,
                             denoise_rate=0.5 if with_m else 0.0)
    assert torch.equal((z0 @ emb.t()).argmax(-1)[mask.bool()], ids[mask.bool()])


@pytest.mark.parametrize("final_call", [False, True])
@pytest.mark.parametrize("with_m", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_with_oracle_returns_reference(with_m, order, final_call):
    emb, ids, mask, x_start, m, oracle, z = _oracle_setup(with_m)
    sched = DiscreteSchedule.from_name("sqrt", 2000)
    ns = NoiseScheduleVP(sched.alphas_cumprod)
    calls = []

    def counted(z, t):  # the oracle, nudged by z so that which call's output is read shows
        out = oracle(z, t) + 1e-3 * z
        calls.append((z.clone(), t.clone(), out))
        return out
    zT, z0 = dpm_solver_sample(counted, ns, z, x_start, mask, m=m, steps=10, order=order, final_call=final_call)
    assert len(calls) == (11 if final_call else 10)  # steps (+ the final z_0 prediction)
    assert torch.equal((z0 @ emb.t()).argmax(-1)[mask.bool()], ids[mask.bool()])
    assert torch.equal(zT[~mask.bool()], x_start[~mask.bool()])
    y = mask.bool()
    if final_call:  # the prediction of one more call, at the end of the solve, on the final state
        last_z, last_t, last_out = calls[-1]
        assert torch.equal(last_z, zT)
        torch.testing.assert_close(z0[y], last_out[y])
        assert not torch.allclose(last_out[y], oracle(z, None)[y])  # the nudge shows: a real check
        assert float(last_t[0]) <= min(float(c[1][0]) for c in calls[:-1])  # where the solve ends
    else:  # z where the solve ends: the reference up to the noise left at t = 1/T (std 0.12)
        sigma = float(ns.marginal_std(torch.tensor([ns.eps], dtype=torch.float64)))
        err = (z0[y] - oracle(z, None)[y]).abs().max().item()
        assert torch.equal(z0, zT) and 0 < err < 5 * sigma, (err, sigma)


def test_clamping_returns_rows_of_the_embedding_matrix():
    from diffuseq.adapters import nearest_embedding
    torch.manual_seed(0)
    emb = torch.randn(40, 8)
    z = torch.randn(3, 7, 8)
    out = nearest_embedding(z, emb)
    d = torch.cdist(z.reshape(-1, 8), emb)
    assert torch.equal(out.reshape(-1, 8), emb[d.argmin(-1)])


def test_clamping_follows_the_original_meaning():
    """clamp_first (the original's default): round from T down to clamp_step; otherwise from
    clamp_step down to 0. Counted on the steps of a respaced chain."""
    from diffuseq.samplers import clamps_at
    emb, ids, mask, x_start, m, oracle, z = _oracle_setup(False)
    sched = DiscreteSchedule.from_name("sqrt", 2000).respace(20)
    for first, clamp_step, want in ((True, 0, 20), (True, 1000, sum(t >= 1000 for t in sched.timestep_map)),
                                    (False, 0, 1), (False, 1000, sum(t <= 1000 for t in sched.timestep_map))):
        seen = []
        clamp = lambda z0: seen.append(1) or z0  # noqa: E731
        ancestral_sample(oracle, sched, z, x_start, mask, clamp=clamp, clamp_step=clamp_step, clamp_first=first)
        assert len(seen) == want, (first, clamp_step)
    assert clamps_at(5, 0) and not clamps_at(5, 6) and clamps_at(5, 5, False) and not clamps_at(5, 4, False)
    # the solver clamps its data predictions the same way: every one of its 11 calls
    seen = []
    ns = NoiseScheduleVP(DiscreteSchedule.from_name("sqrt", 2000).alphas_cumprod)
    dpm_solver_sample(oracle, ns, z, x_start, mask, steps=10, clamp=lambda z0: seen.append(1) or z0)
    assert len(seen) == 11


def test_large_variance_is_beta_and_small_the_posterior_on_a_respaced_chain():
    """On the grid of a chain respaced to 10 steps, step i goes from timestep n = K - i to the one
    below it: "large" is sqrt(beta_n), "small" sqrt(beta~_n) of that chain, and into the clean
    point neither adds noise."""
    from diffuseq.grid import Grid
    from diffuseq.samplers import beta_std, small_std
    sched = DiscreteSchedule.from_name("sqrt", 2000).respace(10)
    g = Grid.chain(sched)
    b, post = sched.betas, sched.posterior_variance
    assert g.steps == 10 and g.t_model[:10].tolist() == sched.timestep_map[::-1].tolist()
    for i in range(1, 10):
        n = 10 - i
        assert beta_std(g, i) == pytest.approx(b[n] ** 0.5, rel=1e-9)
        assert small_std(g, i) == pytest.approx(post[n] ** 0.5, rel=1e-9)
        # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) <= beta_t
        assert small_std(g, i) <= beta_std(g, i)
    assert beta_std(g, 10) == 0.0 and small_std(g, 10) == 0.0
    # under respacing they differ a lot at the last noisy step (K = 10: 0.56 against 0.12 at t = 222)
    assert sched.timestep_map[1] == 222
    assert beta_std(g, 9) == pytest.approx(0.56, abs=0.01)
    assert small_std(g, 9) == pytest.approx(0.12, abs=0.01)


def test_solver_can_start_below_T():
    from diffuseq.grid import solver_timesteps
    ns = NoiseScheduleVP(DiscreteSchedule.from_name("sqrt", 2000).alphas_cumprod)
    full = solver_timesteps(ns, 10, "logSNR")
    late = solver_timesteps(ns, 10, "logSNR", t_start=1999 / 2000)
    assert float(full[0]) == 1.0 and float(late[0]) == pytest.approx(1999 / 2000)
    # the full range spends several steps inside the last training step (its beta is clipped)
    assert sum(float(t) > 1999 / 2000 for t in full) >= 3
    assert sum(float(t) > 1998 / 2000 for t in late) == 1
    lam = ns.marginal_lambda(late)
    gaps = (lam[1:] - lam[:-1]).numpy()
    assert gaps == pytest.approx([gaps[0]] * 10, rel=1e-6)  # still uniform in log-SNR


# ----------------------------------------------------------------------------- absorption and the SDE

def test_step_std_is_the_posterior_std_of_the_chain():
    """For one step of the discrete chain, (n + 1) / T -> n / T, the posterior std is sqrt(beta~_n);
    over a gap of several steps it is sqrt(beta~) of the chain respaced to those two timesteps."""
    from diffuseq.grid import step_std
    sched = DiscreteSchedule.from_name("sqrt", 2000)
    ns = NoiseScheduleVP(sched.alphas_cumprod)
    for n in (1, 7, 400, 1500, 1999):
        s = torch.tensor([(n + 1) / 2000], dtype=torch.float64)
        t = torch.tensor([n / 2000], dtype=torch.float64)
        assert float(step_std(ns, s, t)) == pytest.approx(sched.posterior_variance[n] ** 0.5, rel=1e-6)
    # a gap 600 -> 200: by hand, beta = 1 - abar_200 / abar_600 and beta~ = beta (1 - abar_200) / (1 - abar_600)
    a_s, a_t = sched.alphas_cumprod[600], sched.alphas_cumprod[200]
    by_hand = ((1 - a_s / a_t) * (1 - a_t) / (1 - a_s)) ** 0.5
    got = step_std(ns, torch.tensor([601 / 2000], dtype=torch.float64), torch.tensor([201 / 2000], dtype=torch.float64))
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def _absorbing_case(B, L, D):
    """The sqrt schedule of 2,000 steps, an absorbing state m [D], a mask with the target from
    position 10, and a random source part (seeded)."""
    torch.manual_seed(0)
    ns = NoiseScheduleVP(DiscreteSchedule.from_name("sqrt", 2000).alphas_cumprod)
    mask = torch.zeros(B, L)
    mask[:, 10:] = 1
    return ns, torch.tensor([0.3, -1.0, 2.0, 0.5]), mask, torch.randn(B, L, D) * (1 - mask).unsqueeze(-1)


def test_solver_absorbs_at_the_rate_times_the_step_std():
    """Two solver steps: after the first, each target token becomes m with probability
    rate * step_std(t_0, t_1); the second model call sees exactly m at those tokens."""
    from diffuseq.grid import solver_timesteps, step_std
    B, L, D = 400, 50, 4
    ns, m, mask, x_start = _absorbing_case(B, L, D)
    seen = []

    def denoise(z, t):
        seen.append(z.clone())
        return torch.randn_like(z)

    rate = 0.5
    dpm_solver_sample(denoise, ns, torch.randn(B, L, D) + m, x_start, mask, m=m, steps=2, order=1,
                      skip="logSNR", absorb_rate=rate, generator=torch.Generator().manual_seed(1))
    ts = solver_timesteps(ns, 2, "logSNR")
    p = rate * float(step_std(ns, ts[0], ts[1]))
    assert 0.1 < p < 0.5  # a rate the test can tell apart from 0 and 1
    at_m = (seen[1] == m).all(-1)  # [B, L]
    n = int(mask.sum())
    share = at_m[mask.bool()].float().mean().item()
    assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5, (share, p)
    assert not at_m[~mask.bool()].any()  # the source is never absorbed
    # the last step absorbs nothing: the final prediction reads the solved state as it is
    assert (seen[2] == m).all(-1)[mask.bool()].float().mean().item() < 0.01


def test_solver_with_rate_zero_is_todays_solver_bit_for_bit():
    emb, ids, mask, x_start, m, oracle, z = _oracle_setup(True)
    ns = NoiseScheduleVP(DiscreteSchedule.from_name("sqrt", 2000).alphas_cumprod)
    noisy = lambda z, t: oracle(z, t) + 0.3 * torch.sin(z)  # noqa: E731  (depends on z)
    a = dpm_solver_sample(noisy, ns, z, x_start, mask, m=m, steps=10, order=2, skip="logSNR")
    b = dpm_solver_sample(noisy, ns, z, x_start, mask, m=m, steps=10, order=2, skip="logSNR",
                          absorb_rate=0.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = dpm_solver_sample(noisy, ns, z, x_start, mask, m=m, steps=10, order=2, skip="logSNR",
                          absorb_rate=0.5, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("order", [1, 2])
def test_sde_solver_samples_the_gaussian_closed_form(setup, order):
    """SDE-DPM-Solver++ with the exact x0-predictor of N(MU, S^2) data ends, like the ODE, at the
    distribution of the first timestep's prediction: mean MU, the closed-form variance. The first
    order converges as O(h) (variance 0.111 / 0.195 / 0.224 at 10 / 50 / 800 steps against 0.228),
    the second faster (0.189 / 0.229 at 10 / 50)."""
    sched, ns, f = setup
    shape = (4000, 4, 4)
    zeros, mask = torch.zeros(shape), torch.ones(shape[:2])
    closed = _closed_final_var(sched)
    errs = []
    for steps in ((10, 50, 800) if order == 1 else (10, 50)):
        g = torch.Generator().manual_seed(3)
        _, x = dpm_solver_sample(f, ns, torch.randn(shape, generator=g), zeros, mask, steps=steps,
                                 order=order, skip="logSNR", sde=True, generator=g)
        assert abs(x.mean().item() - MU) < 0.02
        errs.append(abs(x.var().item() - closed))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.03 * closed, errs
    with pytest.raises(ValueError, match="orders 1 and 2"):
        dpm_solver_sample(f, ns, torch.randn(shape), zeros, mask, steps=3, order=3, sde=True)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ancestral_chain_is_the_closed_form_posterior_on_a_respaced_schedule(variance):
    """Each step of a respaced chain, with an absorbing state m off zero and absorption on, is
    z_prev = c1 (z0_hat - m) + c2 (z_t - m) + m + std * eps, then each target token absorbed into
    m with probability r * std; the model sees the training timesteps the chain stands for.
    Everything here is computed from abar of the training schedule, not from the chain's
    coefficient tables."""
    T, k, r = 100, 4, 0.7
    base = DiscreteSchedule.from_name("sqrt", T)
    chain = base.respace(k)
    B, L, D = 3, 6, 4
    g0 = torch.Generator().manual_seed(1)
    m = torch.randn(D, generator=g0) + 2.0
    mask = torch.zeros(B, L, dtype=torch.long)
    mask[:, 2:] = 1
    x_start = torch.randn(B, L, D, generator=g0) * (1 - mask).unsqueeze(-1)
    z_init = torch.randn(B, L, D, generator=g0) + m
    seen = []

    def denoise(z, t):  # depends on z and t, so a wrong state or time shows in the result
        seen.append(int(t[0]))
        return 0.5 * z + t.view(-1, 1, 1).float() / 50 - 0.3

    z, z0 = ancestral_sample(denoise, chain, z_init, x_start, mask, m=m, variance=variance, denoise_rate=r,
                             generator=torch.Generator().manual_seed(7))
    ts = [int(t) for t in chain.timestep_map]
    assert seen == ts[::-1]
    abar = [float(base.alphas_cumprod[t]) for t in ts]
    g = torch.Generator().manual_seed(7)
    y = mask.bool().unsqueeze(-1)
    want = torch.where(y, z_init, x_start)
    for n in range(k - 1, -1, -1):
        a_t, a_prev = abar[n], (abar[n - 1] if n > 0 else 1.0)
        beta = 1 - a_t / a_prev
        c1 = beta * a_prev ** 0.5 / (1 - a_t)
        c2 = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        hat = 0.5 * want + ts[n] / 50 - 0.3
        nxt = c1 * (hat - m) + c2 * (want - m) + m
        if n > 0:
            small = beta * (1 - a_prev) / (1 - a_t)
            if variance == "small":
                std = small ** 0.5
            else:  # beta_n; beta~_1 at n = 0 (no noise there anyway)
                std = beta ** 0.5
            nxt = nxt + std * torch.randn(want.shape, generator=g)
            u = torch.rand(B, L, generator=g)
            nxt = torch.where(((u < r * std) & mask.bool()).unsqueeze(-1), m.expand_as(nxt), nxt)
        want = torch.where(y, nxt, x_start)
        last_hat = hat
    torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z0, last_hat, rtol=1e-5, atol=1e-5)


def test_clamped_prediction_is_what_the_step_uses():
    """With clamping on, the posterior is built from the clamped z_0 (not the raw prediction):
    a clamp that moves every target row to one vector decides the result."""
    emb, ids, mask, x_start, m, oracle, z = _oracle_setup(False)
    sched = DiscreteSchedule.from_name("sqrt", 2000).respace(5)
    target = emb[7]
    clamp = lambda z0: torch.where(mask.bool().unsqueeze(-1), target.expand_as(z0), z0)  # noqa: E731
    _, z0 = ancestral_sample(oracle, sched, z, x_start, mask, clamp=clamp, generator=torch.Generator().manual_seed(0))
    y = mask.bool()
    assert torch.equal(z0[y], target.expand_as(z0[y]))
    assert torch.equal((z0 @ emb.t()).argmax(-1)[y], torch.full_like(ids[y], 7))


def test_after_absorb_first_makes_the_next_step_first_order(setup):
    """With absorption certain at every step, "first" makes every step after one first order: the
    2M solve then equals the first-order solve with the same draws (12 steps: the last is of
    order 2 too), while "keep" does not; with
    no absorption the two are the same solve."""
    sched, ns, f = setup
    z = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1))
    x_start, mask, m = torch.zeros(3, 6, 4), torch.tensor([[0, 1, 1, 1, 1, 1]] * 3), torch.full((4,), 0.3)

    def run(order, after, rate):
        return dpm_solver_sample(f, ns, z, x_start, mask, m=m, steps=12, order=order, absorb_rate=rate,
                                 after_absorb=after, generator=torch.Generator().manual_seed(2))[1]

    torch.testing.assert_close(run(2, "first", 1e6), run(1, "keep", 1e6))
    assert not torch.allclose(run(2, "keep", 1e6), run(1, "keep", 1e6))
    torch.testing.assert_close(run(2, "first", 0.0), run(2, "keep", 0.0))
    with pytest.raises(ValueError, match="after_absorb"):
        run(2, "never", 0.5)


def test_least_confident_takes_the_rounded_share_of_each_target():
    from diffuseq.samplers import least_confident
    conf = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.8, 0.3], [0.05, 0.6, 0.7, 0.1, 0.2, 0.9]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]])
    u = least_confident(conf, mask, 0.4)  # 5 * 0.4 = 2 and 3 * 0.4 = 1.2 -> 1 token
    assert u.tolist() == [[1, 0, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1]]
    assert least_confident(conf, mask, 0.0).eq(1).all()


def test_confidence_remask_absorbs_the_least_sure_tokens_at_the_rate():
    """Two solver steps with remask="confidence": after the first, exactly round(p * n) target
    tokens of each example are m (p = rate * step std), and they are those of lowest confidence;
    nothing is drawn, so two generators give the same solve."""
    from diffuseq.grid import solver_timesteps, step_std
    B, L, D = 6, 30, 4
    ns, m, mask, x_start = _absorbing_case(B, L, D)
    conf = torch.rand(B, L)
    seen = []

    def denoise(z, t):
        seen.append(z.clone())
        return torch.sin(z)

    def run(seed):
        seen.clear()
        return dpm_solver_sample(denoise, ns, torch.randn(B, L, D, generator=torch.Generator().manual_seed(3)) + m,
                                 x_start, mask, m=m, steps=2, order=1, skip="logSNR", absorb_rate=0.5,
                                 remask="confidence", confidence=lambda z0: conf,
                                 generator=torch.Generator().manual_seed(seed))
    a = run(1)
    at_m = (seen[1] == m).all(-1)
    ts = solver_timesteps(ns, 2, "logSNR")
    k = round(0.5 * float(step_std(ns, ts[0], ts[1])) * 20)
    assert 1 <= k < 20
    for b in range(B):
        taken = at_m[b].nonzero().flatten()
        assert len(taken) == k
        assert set(taken.tolist()) == set((conf[b, 10:].argsort()[:k] + 10).tolist())
    assert torch.equal(a[1], run(2)[1])
    with pytest.raises(ValueError, match="confidence"):
        dpm_solver_sample(denoise, ns, torch.randn(B, L, D), x_start, mask, m=m, steps=2, absorb_rate=0.5,
                          remask="confidence")


def test_confidence_remasking_takes_its_share_of_the_kept_positions_only():
    """Positions a length region hides (mask 1, keep 0) have confidence 0 but are no tokens: the
    re-mask takes round(p * kept) of the kept ones, the least confident, and never a hidden one."""
    from types import SimpleNamespace
    from diffuseq.samplers import Absorb
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1]])
    keep = torch.tensor([[True, True, True, True, True, False, False]])
    conf = torch.tensor([[0.0, 0.9, 0.2, 0.8, 0.1, 0.0, 0.0]])
    model = SimpleNamespace(mask=mask, z0=None, state=torch.zeros(2), grid=None,
                            denoise=SimpleNamespace(keep=keep))
    absorb = Absorb(1.0, std=lambda g, i: 0.5, remask="confidence", confidence=lambda z0: conf)
    x = torch.ones(1, 7, 2)
    out, hit = absorb(x, model, 1)
    taken = (out[0, :, 0] == 0).nonzero().flatten().tolist()
    assert taken == [2, 4]  # 0.5 of the 4 kept target tokens: the two least confident
    assert bool(hit[0])
