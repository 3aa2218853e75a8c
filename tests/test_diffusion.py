import pytest
import torch

from diffuseq.diffusion import absorb, q_sample, training_losses
from diffuseq.model import Denoiser, DenoiserConfig
from diffuseq.schedule import DiscreteSchedule


def _batch(B=3, L=10, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(B, L, D, generator=g)
    mask = torch.zeros(B, L, dtype=torch.long)
    mask[:, 4:] = 1
    return z0, mask, g


@pytest.mark.parametrize("name", ["sqrt", "cosine", "linear"])
@pytest.mark.parametrize("n", [0, 300, 1999])
def test_q_sample_has_closed_form_mean_and_variance(name, n):
    sched = DiscreteSchedule.from_name(name, 2000)
    N, D = 200_000, 2
    z0 = torch.tensor([1.5, -0.5]).expand(1, 1, D)
    mask = torch.ones(1, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(n)
    noise = torch.randn(N, 1, D, generator=g)
    zt = q_sample(sched, z0.expand(N, 1, D), torch.full((N,), n), noise, mask.expand(N, 1))
    abar = sched.alphas_cumprod[n]
    mean, var = abar ** 0.5 * z0.view(D), 1 - abar
    se = (var / N) ** 0.5
    assert torch.allclose(zt.mean(0).view(D), mean.float(), atol=5 * se)
    assert torch.allclose(zt.var(0).view(D), torch.tensor(var).float(), rtol=0.02, atol=1e-6)


def test_learned_mean_q_sample_reaches_m_at_T_and_spares_x():
    sched = DiscreteSchedule.from_name("sqrt", 2000)
    N = 50_000
    z0 = torch.randn(1, 6, 4).expand(N, 6, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]]).expand(N, 6)
    m = torch.tensor([2.0, -3.0, 0.5, 1.0])
    noise = torch.randn(N, 6, 4, generator=torch.Generator().manual_seed(1))
    zt = q_sample(sched, z0, torch.full((N,), 1999), noise, mask, m)
    assert torch.equal(zt[:, :2], z0[:, :2])
    y_mean = zt[:, 2:].mean((0, 1))
    assert torch.allclose(y_mean, m, atol=0.02), y_mean
    # and in between: mean is sqrt(abar)(z0 - m) + m
    n = 500
    zt = q_sample(sched, z0, torch.full((N,), n), noise, mask, m)
    a = sched.sqrt_alphas_cumprod[n]
    expect = (a * (z0[0, 2:] - m) + m).float()
    assert torch.allclose(zt[:, 2:].mean(0), expect, atol=0.03)


@pytest.mark.parametrize("n", [0, 1, 777, 1999])
def test_partial_noising_leaves_x_bit_identical(n):
    sched = DiscreteSchedule.from_name("sqrt", 2000)
    z0, mask, g = _batch()
    noise = torch.randn(z0.shape, generator=g)
    zt = q_sample(sched, z0, torch.full((3,), n), noise, mask, m=torch.ones(8))
    assert torch.equal(zt[:, :4], z0[:, :4])
    assert not torch.equal(zt[:, 4:], z0[:, 4:])


def test_discrete_noise_absorbs_expected_fraction():
    sched = DiscreteSchedule.from_name("sqrt", 2000)
    B, L, D, r, n = 400, 64, 4, 0.5, 600
    m = torch.full((D,), 7.0)  # far from every noised vector, so absorbed tokens are recognisable
    mask = torch.zeros(B, L, dtype=torch.long)
    mask[:, 16:] = 1
    z = torch.randn(B, L, D)
    prob = r * torch.full((B,), float(sched.sqrt_one_minus_alphas_cumprod[n]))
    u = torch.rand(B, L, generator=torch.Generator().manual_seed(3))
    out = absorb(z, mask, m, prob, u)
    hit = (out == m).all(-1)
    assert not hit[:, :16].any()
    frac = hit[:, 16:].float().mean().item()
    p = prob[0].item()
    se = (p * (1 - p) / (B * 48)) ** 0.5
    assert abs(frac - p) < 5 * se, (frac, p)


def test_training_losses_terms_are_finite_and_masked():
    torch.manual_seed(0)
    cfg = DenoiserConfig(vocab_size=50, seq_len=12, hidden_dim=16, width=32, layers=1, heads=2,
                         ffn=64, dropout=0.0, diffusion_steps=100, learned_mean_embed=True)
    model = Denoiser(cfg)
    sched = DiscreteSchedule.from_name("sqrt", 100)
    ids = torch.randint(5, 50, (4, 12))
    mask = torch.zeros(4, 12, dtype=torch.long)
    mask[:, 5:] = 1
    t = torch.tensor([0, 10, 50, 99])
    noise = torch.randn(2, 4, 12, 16)
    terms = training_losses(model, sched, ids, mask, t, noise, denoise_rate=0.5, reg_rate=0.01,
                            u=torch.rand(4, 12))
    for k in ("loss", "mse", "tT", "decoder_nll", "reg", "nll", "acc"):
        assert terms[k].shape == (4,) and torch.isfinite(terms[k]).all(), k
    # changing tokens of the x part changes nothing in the y-only decoder term
    ids2 = ids.clone()
    ids2[:, 1:4] = 7
    terms2 = training_losses(model, sched, ids2, mask, t, noise)
    assert torch.allclose(terms2["decoder_nll"], terms["decoder_nll"])
    terms["loss"].mean().backward()
    assert model.mean_embed.grad is not None and model.mean_embed.grad.abs().sum() > 0
