import pytest
import torch
import torch.nn.functional as F

from diffuseq.data.dataset import collate
from diffuseq.diffusion import absorb, q_sample, rounding_terms, target_region, training_losses
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


def _loss_case(**over):
    """A 1-layer v2 model over 100 timesteps and a batch of 4 (target from position 5), with
    timesteps 0, 10, 50, 99 and Gaussian noise."""
    torch.manual_seed(0)
    cfg = DenoiserConfig(vocab_size=50, seq_len=12, hidden_dim=16, width=32, layers=1, heads=2,
                         ffn=64, dropout=0.0, diffusion_steps=100, learned_mean_embed=True, **over)
    ids = torch.randint(5, 50, (4, 12))
    mask = torch.zeros(4, 12, dtype=torch.long)
    mask[:, 5:] = 1
    return (Denoiser(cfg), DiscreteSchedule.from_name("sqrt", 100), ids, mask, torch.tensor([0, 10, 50, 99]),
            torch.randn(2, 4, 12, 16))


def test_training_losses_terms_are_finite_and_masked():
    model, sched, ids, mask, t, noise = _loss_case()
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


def _examples(lengths, src_len=4, vocab=50, seed=0):
    """Rows {"input_ids", "src_len"} of the given total lengths: [CLS]=1 x [SEP]=2 y [SEP]=2."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        z = torch.randint(5, vocab, (n,), generator=g).tolist()
        z[0], z[src_len - 1], z[-1] = 1, 2, 2
        rows.append({"input_ids": z, "src_len": src_len})
    return rows


def _region_model(seed=0, **over):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, seq_len=40, hidden_dim=16, width=32, layers=2, heads=2, ffn=64, dropout=0.0,
               diffusion_steps=100, learned_mean_embed=True, segment_positions=True, length_head=True)
    cfg.update(over)
    return Denoiser(DenoiserConfig(**cfg)), DiscreteSchedule.from_name("sqrt", 100)


def _losses_at(model, sched, batch, margin, noise, u, t, sc=None):
    L = batch["input_ids"].shape[1]
    keep = target_region(batch["length"], margin, L)
    model.zero_grad()
    terms = training_losses(model, sched, batch["input_ids"], batch["input_mask"], t, noise[:, :, :L],
                            denoise_rate=0.5, reg_rate=0.01, u=u[:, :L], self_cond_u=sc, keep=keep)
    terms["loss"].mean().backward()
    return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("self_cond", [False, True])
def test_padding_free_and_padded_batches_give_the_same_loss_and_gradients(self_cond):
    """With a margin, an example's loss is that of its target region alone: the batch padded to
    seq_len (40) and the same batch cut to its longest row + margin (24) give the same terms and
    the same gradients. Without one (the original's training) the padding is target, and the two
    differ."""
    model, sched = _region_model(self_cond=self_cond)
    rows = _examples([9, 14, 19, 12])
    long = collate(rows, 40, pad_id=0)
    short = collate(rows, 40, pad_id=0, pad_to="longest", margin=4)
    assert short["input_ids"].shape[1] == 24 and torch.equal(short["length"], torch.tensor([9, 14, 19, 12]))
    g = torch.Generator().manual_seed(1)
    noise, u = torch.randn(2, 4, 40, 16, generator=g), torch.rand(4, 40, generator=g)
    t, sc = torch.tensor([0, 30, 60, 99]), torch.tensor([0.2, 0.7, 0.4, 0.9])
    a, ga = _losses_at(model, sched, long, 4, noise, u, t, sc)
    b, gb = _losses_at(model, sched, short, 4, noise, u, t, sc)
    assert set(a) == set(b) and "length" in a
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        assert torch.allclose(ga[n], gb[n], rtol=1e-4, atol=1e-6), n
    # the padding-as-target objective depends on how far the batch is padded
    c, _ = _losses_at(model, sched, long, -1, noise, u, t, sc)
    d, _ = _losses_at(model, sched, short, -1, noise, u, t, sc)
    assert not torch.allclose(c["mse"], d["mse"], rtol=1e-3)


def test_rounding_terms_on_target_rows_match_the_full_logits():
    """The rounding term computed on the target rows only equals the mean over the target of
    the cross-entropy of the full [B, L, V] logits, and its accuracy the mean argmax hit."""
    model, _ = _region_model(lm_bias=True)
    with torch.no_grad():
        model.lm_bias.normal_()
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.zeros(3, 10, dtype=torch.long)
    mask[0, 4:] = 1
    mask[1, 2:7] = 1
    mask[2, 9:] = 1
    z = torch.randn(3, 10, 16)
    logits = model.get_logits(z)
    full = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    want = (full * mask).sum(1) / mask.sum(1)
    hit = ((logits.argmax(-1) == ids).float() * mask).sum(1) / mask.sum(1)
    nll, acc = rounding_terms(model, z, ids, mask, accuracy=True)
    assert torch.allclose(nll, want, atol=1e-5) and torch.allclose(acc, hit)


def test_target_region_ends_margin_pads_after_each_example():
    length = torch.tensor([3, 6])
    keep = target_region(length, 2, 10)
    assert keep.tolist() == [[True] * 5 + [False] * 5, [True] * 8 + [False] * 2]
    assert target_region(length, -1, 10) is None  # the original's training: all is target
    assert target_region(length, 4, 7) is None  # every region reaches L: nothing hidden


@pytest.mark.parametrize("denoise", [True, False])
def test_trainer_absorbs_at_the_trained_rate_only_with_denoise(tmp_path, denoise):
    """Through the trainer's own loss call: with --denoise, the model sees each target token of
    z_t absorbed into m with probability denoise_rate * sqrt(1 - abar_t); without it, none."""
    from toy import tiny_args, toy_data

    from diffuseq.objective import Draws
    from diffuseq.step import NetView
    from diffuseq.trainer import Trainer
    d = toy_data(tmp_path)
    tr = Trainer(tiny_args(d, tmp_path / "run", "--learned_mean_embed", "--denoise", str(denoise).lower(),
                           "--denoise_rate", "0.8", "--learning_steps", "1"))
    with torch.no_grad():
        tr.model.mean_embed.fill_(7.0)  # far from every noised vector: absorbed tokens are recognisable
    seen = []

    def spy(zt, t, mask, prev, keep=None):
        seen.append((zt.detach().clone(), (mask.bool() & (True if keep is None else keep)).clone()))
        return tr.model(zt, t, mask, prev, keep)
    batch = tr.loader.batch_at(0)
    ids, mask = batch["input_ids"].repeat(32, 1), batch["input_mask"].repeat(32, 1)
    B, L = ids.shape
    n = 30
    t = torch.full((B,), n)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        noise = torch.randn(2, B, L, tr.args.hidden_dim, generator=g)
        d = Draws(t, torch.ones(B), noise, torch.rand(B, L, generator=g), torch.rand(B, generator=g))
        tr.objective.losses(NetView(spy, tr.model), ids, mask, d, None, monitor=False)
    hits = sum(int(((z == 7.0).all(-1) & y).sum()) for z, y in seen)
    total = sum(int(y.sum()) for _, y in seen)
    assert not any(((z == 7.0).all(-1) & ~y).any() for z, y in seen)  # never outside the target
    if not denoise:
        assert hits == 0
        return
    abar = float(DiscreteSchedule.from_name("sqrt", 50).alphas_cumprod[n])
    p = 0.8 * (1 - abar) ** 0.5
    se = (p * (1 - p) / total) ** 0.5
    assert abs(hits / total - p) < 5 * se, (hits / total, p)


def test_original_objective_averages_every_position():
    """positions="all" (the original DiffuSeq's objective), written out by hand: mse is the mean
    of (f(z_t) - z_0)^2 over every position and dimension (against Emb(w) at t = 0), tT the mean
    of (sqrt(abar_{T-1}) z_0)^2 with no m, decoder_nll the mean cross-entropy of the tied logits
    (with the bias) of z_0 over every position; m_reg="norm" adds reg_rate * |m|."""
    model, sched, ids, mask, t, noise = _loss_case(lm_bias=True, m_init="normal")
    model.eval()
    with torch.no_grad():
        model.lm_bias.uniform_(-0.5, 0.5)
    terms = training_losses(model, sched, ids, mask, t, noise, reg_rate=0.01, positions="all", m_reg="norm")

    m = model.mean_embed
    emb = model.word_embedding(ids)
    z0 = emb + sched.sqrt_one_minus_alphas_cumprod[0] * noise[0]
    ab = torch.tensor(sched.alphas_cumprod, dtype=torch.float32)[t].view(-1, 1, 1)
    zt = ab.sqrt() * (z0 - m) + m + (1 - ab).sqrt() * noise[1]
    zt = torch.where(mask.bool().unsqueeze(-1), zt, z0)
    pred = model(zt, t)
    target = torch.where((t == 0).view(-1, 1, 1), emb, z0)
    mse = ((pred - target) ** 2).mean((1, 2))
    tT = ((sched.alphas_cumprod[-1] ** 0.5 * z0) ** 2).mean((1, 2))
    logits = z0 @ model.word_embedding.weight.t() + model.lm_bias
    nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none").mean(1)
    reg = 0.01 * m.norm()
    for k, want in (("mse", mse), ("tT", tT), ("decoder_nll", nll), ("reg", reg.expand(4))):
        torch.testing.assert_close(terms[k], want, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(terms["loss"], mse + tT + nll + reg, rtol=1e-5, atol=1e-6)
    # the source's tokens now count: changing them changes decoder_nll (the target-only one does not)
    ids2 = ids.clone()
    ids2[:, 1:4] = 7
    assert not torch.allclose(training_losses(model, sched, ids2, mask, t, noise, positions="all")["decoder_nll"],
                              terms["decoder_nll"])


def test_original_m_starts_normal_with_std_one_over_root_D():
    torch.manual_seed(0)
    stds = [Denoiser(DenoiserConfig(vocab_size=10, hidden_dim=256, width=32, layers=1, heads=2, ffn=32,
                                    learned_mean_embed=True, m_init="normal")).mean_embed.std().item()
            for _ in range(20)]
    assert abs(sum(stds) / 20 - 256 ** -0.5) < 0.005
    zero = Denoiser(DenoiserConfig(vocab_size=10, hidden_dim=8, width=32, layers=1, heads=2, ffn=32,
                                   learned_mean_embed=True))
    assert (zero.mean_embed == 0).all()


def test_editor_examples_are_noised_from_the_laid_source_and_scored_against_the_target():
    """from_source rows: the model's input z_t is q(z_t | Emb(laid source) + the first noise) on the
    target part, the source part untouched; the loss still asks for the target's z_0. Other rows
    are unchanged by the option."""
    model, sched, ids, mask, t, noise = _loss_case()
    laid = ids.clone()
    laid[:, 5:] = 9  # a "source" laid over the target part
    use = torch.tensor([True, False, True, False])
    seen = {}
    forward = model.forward

    def spy(z, tt, *a, **k):
        seen["z"] = z.detach().clone()
        return forward(z, tt, *a, **k)
    model.forward = spy
    terms = training_losses(model, sched, ids, mask, t, noise, source_ids=laid, from_source=use, monitor=False)
    z_src = seen["z"]
    plain = training_losses(model, sched, ids, mask, t, noise, monitor=False)
    z_plain = seen["z"]
    sigma0 = sched.at("sqrt_one_minus_alphas_cumprod", torch.zeros_like(t))
    start = model.get_embeds(laid).detach() + sigma0 * noise[0]
    want = q_sample(sched, start, t, noise[1], mask, model.mean_embed.detach())
    assert torch.allclose(z_src[use], want[use], atol=1e-6)
    assert torch.equal(z_src[~use], z_plain[~use])
    assert torch.equal(z_src[:, :5], z_plain[:, :5])  # the source part is the same either way
    assert torch.equal(terms["decoder_nll"], plain["decoder_nll"])  # the target's rounding term, both


def test_draw_source_takes_the_share_at_times_up_to_the_maximum():
    from types import SimpleNamespace
    from diffuseq.noise import draw_source
    args = SimpleNamespace(seed=3, source_rate=0.3, source_t_max=40)
    use, t = draw_source(args, 5, 20_000, torch.device("cpu"))
    assert abs(use.float().mean().item() - 0.3) < 0.02
    assert int(t.min()) == 0 and int(t.max()) == 40
    again = draw_source(args, 5, 20_000, torch.device("cpu"))
    assert torch.equal(use, again[0]) and torch.equal(t, again[1])
    assert not torch.equal(use, draw_source(args, 6, 20_000, torch.device("cpu"))[0])


def test_anchor_term_is_the_cross_entropy_of_the_prediction_and_trains_the_denoiser():
    """--anchor_weight w adds w * -log p(w | f(z_t, t)), computed by hand from the model's own
    prediction, to the loss; its gradient reaches the denoiser's layers, which the rounding term
    of the true z_0 (decoder_nll) never does."""
    model, sched, ids, mask, t, noise = _loss_case()
    base = training_losses(model, sched, ids, mask, t, noise, monitor=False)
    assert "anchor" not in base
    terms = training_losses(model, sched, ids, mask, t, noise, anchor=0.5, monitor=True)
    with torch.no_grad():
        pred = model(q_sample(sched, model.get_embeds(ids) + sched.at("sqrt_one_minus_alphas_cumprod",
                                                                     torch.zeros_like(t)) * noise[0],
                              t, noise[1], mask, model.mean_embed), t, mask).float()
        ce = F.cross_entropy(model.get_logits(pred).transpose(1, 2), ids, reduction="none")
        want = (ce * mask).sum(1) / mask.sum(1)
    assert torch.allclose(terms["anchor"], 0.5 * want, atol=1e-5)
    assert torch.allclose(terms["nll"], want, atol=1e-5)
    assert torch.allclose(terms["loss"], base["loss"] + 0.5 * want, atol=1e-5)
    layer = dict(model.named_parameters())["layers.0.attn.qkv.weight"]
    model.zero_grad()
    base["decoder_nll"].sum().backward()
    assert layer.grad is None or layer.grad.abs().sum() == 0
    terms["anchor"].sum().backward()
    assert layer.grad is not None and layer.grad.abs().sum() > 0
