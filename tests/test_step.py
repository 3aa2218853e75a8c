"""One optimisation step (diffuseq/step.py) under the options that make the original-* profiles
train as the original code does: gradients added over microbatches, the loss-aware sampler
learning after every microbatch, draws replicated across processes, and the EMA file keeping the
live word embedding."""
import torch

from diffuseq import dist
from diffuseq.optim import EMA, ema_live_names
from diffuseq.resample import LossAwareSampler
from diffuseq.trainer import Trainer
from toy import tiny_args, toy_data


def _trainer(tmp_path, *extra):
    data = toy_data(tmp_path / "data")
    torch.manual_seed(0)
    return Trainer(tiny_args(data, tmp_path / "run", "--dropout", "0", "--microbatch", "2", "--warmup_steps", "0",
                             "--grad_clip", "0", *extra))


def _grads(tr, batch):
    """The gradients one step computes (the optimiser step itself skipped)."""
    tr.stepper.opt.step = lambda *a, **k: None
    tr.stepper.opt.zero_grad = lambda *a, **k: None
    tr.stepper.ema.update = lambda: None
    tr.stepper(batch, 0)
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    tr.model.zero_grad(set_to_none=True)
    return grads


def test_summed_microbatches_give_their_number_times_the_mean_gradient(tmp_path):
    """--grad_accumulation sum (the original's): each microbatch's mean loss is back-propagated,
    so with 4 equal microbatches the gradient is 4 times that of the batch mean."""
    tr = _trainer(tmp_path / "a", "--schedule_sampler", "uniform")
    batch = tr.loader.batch_at(0)
    mean = _grads(tr, batch)
    tr.args = tr.stepper.args = tr.args.replace(grad_accumulation="sum")
    summed = _grads(tr, batch)
    assert tr.args.bsz // tr.args.microbatch == 4
    for n, g in mean.items():
        torch.testing.assert_close(summed[n], 4 * g, rtol=1e-4, atol=1e-7)


def test_the_sampler_learns_after_every_microbatch(tmp_path):
    """--sampler_update microbatch: each microbatch's timesteps come from the sampler as it stands
    after the last microbatch's losses; with --sampler_update log, nothing reaches it until the
    log line."""
    tr = _trainer(tmp_path / "b", "--sampler_update", "microbatch", "--schedule_sampler", "lossaware")
    seen = []
    update = tr.sampler.update

    def spy(t, losses):
        seen.append((list(t), list(losses)))
        update(t, losses)

    tr.sampler.update = spy
    tr.train_step(tr.loader.batch_at(0))
    assert len(seen) == tr.args.bsz // tr.args.microbatch  # one update per microbatch
    assert all(len(t) == tr.args.microbatch for t, _ in seen)
    assert tr.sampler.loss_counts.sum() == tr.args.bsz and tr.stepper.pending == []

    tr2 = _trainer(tmp_path / "c", "--schedule_sampler", "lossaware")
    tr2.train_step(tr2.loader.batch_at(0))
    assert tr2.sampler.loss_counts.sum() == 0 and len(tr2.stepper.pending) == 1


def test_microbatch_draws_follow_the_warmed_up_sampler(tmp_path):
    """Once warmed up, the sampler's probabilities set the next microbatch's weights: w = 1 / (T p(t))."""
    tr = _trainer(tmp_path / "d", "--sampler_update", "microbatch", "--schedule_sampler", "lossaware")
    T = tr.args.diffusion_steps
    s = tr.sampler
    s.loss_history[:] = torch.linspace(1, 5, T, dtype=torch.float64)[:, None].numpy()
    s.loss_counts[:] = s.history
    t, w = tr.stepper.draw_times(0, 0, 2)
    p = s.probs()
    torch.testing.assert_close(w, torch.tensor(1.0 / (T * p[t.numpy()]), dtype=torch.float32))


def test_replicated_draws_are_the_same_on_every_process(tmp_path, monkeypatch):
    """--replicated_draws (the original's): each process takes the first rows of one draw for the
    largest share, whatever part of the global batch it holds; otherwise its own rows."""
    tr = _trainer(tmp_path / "e", "--replicated_draws", "true")
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    batch = tr.loader.batch_at(0)
    ids, mask = batch["input_ids"][:4], batch["input_mask"][:4]
    a = tr.objective.draw(3, ids, mask, None, tr.sampler, torch.arange(0, 4))
    b = tr.objective.draw(3, ids, mask, None, tr.sampler, torch.arange(4, 8))
    torch.testing.assert_close(a.noise, b.noise)
    torch.testing.assert_close(a.t, b.t)
    tr.args = tr.objective.args = tr.args.replace(replicated_draws=False)
    c = tr.objective.draw(3, ids, mask, None, tr.sampler, torch.arange(0, 4))
    d = tr.objective.draw(3, ids, mask, None, tr.sampler, torch.arange(4, 8))
    assert not torch.equal(c.noise, d.noise)


def test_live_embedding_ema_keeps_the_live_embedding_and_resumes_its_average(tmp_path):
    """--ema_embedding live: the EMA weights hold the live word embedding (as the original's EMA
    files) and the average of every other parameter; the embedding's own average is kept in the
    training state and comes back on resume."""
    tr = _trainer(tmp_path / "f", "--ema_embedding", "live", "--ema_rate", "0.5", "--learning_steps", "2",
                  "--save_interval", "2", "--eval_interval", "0")
    assert ema_live_names(tr.args) == ("word_embedding.weight",)
    tr.train()
    sd = tr.ema.state_dict(tr.model)
    live = dict(tr.model.named_parameters())
    torch.testing.assert_close(sd["word_embedding.weight"], live["word_embedding.weight"].detach())
    assert not torch.equal(sd["layers.0.fc1.weight"], live["layers.0.fc1.weight"].detach())
    average = tr.ema.shadow_of(tr.model)["word_embedding.weight"]
    assert not torch.equal(average, live["word_embedding.weight"].detach())

    resumed = Trainer(tr.args.replace(resume_checkpoint=str(tmp_path / "f" / "run"), explicit=[]))
    torch.testing.assert_close(resumed.ema.shadow_of(resumed.model)["word_embedding.weight"], average)


def test_ema_closed_form():
    """Two updates at rate r from p0 with the parameter at p1 then p2: r^2 p0 + r(1-r) p1 + (1-r) p2."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ema, r = EMA([p], 0.9), 0.9
    p0 = p.detach().clone()
    with torch.no_grad():
        p.copy_(torch.tensor([3.0, 0.0]))
    ema.update()
    p1 = p.detach().clone()
    with torch.no_grad():
        p.copy_(torch.tensor([-1.0, 5.0]))
    ema.update()
    torch.testing.assert_close(ema.shadow[0], r * r * p0 + r * (1 - r) * p1 + (1 - r) * p.detach())


def test_lossaware_weights_are_inverse_probabilities():
    s = LossAwareSampler(4, history=1)
    s.update([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    t, w = s.sample(100, torch.Generator().manual_seed(0))
    p = s.probs()
    torch.testing.assert_close(w, torch.tensor(1.0 / (4 * p[t.numpy()]), dtype=torch.float32))
