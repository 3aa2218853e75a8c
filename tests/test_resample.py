"""Timestep samplers of diffuseq/resample.py against hand-computed probabilities and weights."""
import numpy as np
import pytest
import torch

from diffuseq.resample import LossAwareSampler, UniformSampler, create_sampler


def fill(sampler, losses_by_t):
    """Record, for each timestep t, the losses losses_by_t[t] one after the other."""
    for t, losses in enumerate(losses_by_t):
        for loss in losses:
            sampler.update([t], [loss])


def test_lossaware_is_uniform_until_every_timestep_has_a_full_history():
    s = LossAwareSampler(num_steps=4, history=3)
    fill(s, [[1.0] * 3, [9.0] * 3, [1.0] * 3, [1.0] * 2])  # t = 3 has only 2 of 3 losses
    assert not s.warmed_up()
    assert np.allclose(s.probs(), 0.25)
    s.update([3], [1.0])
    assert s.warmed_up() and not np.allclose(s.probs(), 0.25)


def test_lossaware_probabilities_follow_the_loss_history():
    """p(t) = (1 - u) sqrt(mean of loss_t^2) / sum_s sqrt(mean of loss_s^2) + u / T."""
    T, u = 3, 0.1
    s = LossAwareSampler(num_steps=T, history=2, uniform_prob=u)
    fill(s, [[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    rms = np.array([np.sqrt((9 + 16) / 2), 1.0, 0.0])  # 3.5355, 1, 0
    expect = (1 - u) * rms / rms.sum() + u / T
    assert np.allclose(s.probs(), expect, atol=1e-12)
    assert s.probs()[0] > s.probs()[1] > s.probs()[2] == pytest.approx(u / T)
    assert s.probs().sum() == pytest.approx(1.0)


def test_lossaware_keeps_only_the_newest_losses():
    s = LossAwareSampler(num_steps=2, history=2, uniform_prob=0.0)
    fill(s, [[100.0, 100.0], [1.0, 1.0]])
    assert s.probs()[0] == pytest.approx(100 / 101)
    s.update([0, 0], [1.0, 1.0])  # the two old losses of t = 0 are pushed out
    assert np.allclose(s.probs(), [0.5, 0.5])
    assert list(s.loss_history[0]) == [1.0, 1.0]


def test_draws_follow_the_probabilities_and_weights_undo_them():
    """Frequencies of the drawn t match p(t) (chi-square bound), and w = 1 / (T p(t)), so that
    E[w * loss(t)] under p is the uniform mean of the per-timestep losses."""
    T = 4
    s = LossAwareSampler(num_steps=T, history=1, uniform_prob=0.0)
    per_t_loss = np.array([4.0, 2.0, 1.0, 1.0])
    fill(s, [[v] for v in per_t_loss])
    p = s.probs()
    assert np.allclose(p, per_t_loss / per_t_loss.sum())
    n = 40000
    t, w = s.sample(n, torch.Generator().manual_seed(0))
    counts = np.bincount(t.numpy(), minlength=T)
    chi2 = (((counts - n * p) ** 2) / (n * p)).sum()
    assert chi2 < 16.3  # p = 0.001 for 3 degrees of freedom
    assert np.allclose(w.numpy(), 1.0 / (T * p[t.numpy()]), rtol=1e-6)
    estimate = float((w.double() * torch.as_tensor(per_t_loss)[t]).mean())
    assert estimate == pytest.approx(per_t_loss.mean(), rel=0.02)


def test_uniform_sampler_has_unit_weights_and_covers_every_timestep():
    s = UniformSampler(5)
    t, w = s.sample(5000, torch.Generator().manual_seed(1))
    assert torch.all(w == 1.0)
    assert set(t.tolist()) == set(range(5))


def test_state_round_trip_and_names():
    s = LossAwareSampler(num_steps=3, history=2)
    fill(s, [[1.0, 2.0], [3.0, 4.0], [5.0]])
    r = create_sampler("lossaware", 3)
    r.load_state_dict(s.state_dict())
    assert np.array_equal(r.loss_history, s.loss_history)
    assert np.array_equal(r.loss_counts, s.loss_counts) and r.history == 2
    assert np.allclose(r.probs(), s.probs())
    assert isinstance(create_sampler("uniform", 3), UniformSampler)
    with pytest.raises(ValueError, match="unknown schedule sampler"):
        create_sampler("nope", 3)
