"""The denoiser's options (diffuseq/model.py): segment positions, self-conditioning, output bias."""
import pytest
import torch

from diffuseq.diffusion import training_losses
from diffuseq.model import Denoiser, DenoiserConfig
from diffuseq.schedule import DiscreteSchedule


def model(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, seq_len=12, hidden_dim=8, width=32, layers=1, heads=2, ffn=64,
               dropout=0.0, diffusion_steps=100)
    return Denoiser(DenoiserConfig(**(cfg | kw))).eval()


def y_mask(src_lens, L=12):
    return (torch.arange(L)[None, :] >= torch.tensor(src_lens)[:, None]).long()


def test_segment_positions_restart_at_y():
    m = model(segment_positions=True)
    mask = y_mask([3, 7])
    got = m.positions(mask, 12)
    P, S = m.position_embeddings.weight, m.segment_embeddings.weight
    for b, src_len in enumerate((3, 7)):
        for i in range(12):
            want = P[i] + S[0] if i < src_len else P[i - src_len] + S[1]
            torch.testing.assert_close(got[b, i], want)
    # without the option, positions are absolute and the mask plays no part
    plain = model()
    assert torch.equal(plain.positions(None, 12), plain.position_embeddings.weight[:12])


def test_segment_positions_do_not_depend_on_the_source_length():
    """The position input of y_i is the same whether x has 2 or 4 tokens; with absolute
    positions it is not."""
    m = model(segment_positions=True)
    assert torch.equal(m.positions(y_mask([2]), 12)[0, 2:7], m.positions(y_mask([4]), 12)[0, 4:9])
    plain = model()
    assert not torch.equal(plain.positions(None, 12)[2:7], plain.positions(None, 12)[4:9])


def test_self_conditioning_changes_the_input():
    m = model(self_cond=True)
    z, t, mask = torch.randn(2, 12, 8), torch.tensor([10.0, 80.0]), y_mask([4, 4])
    none = m(z, t, mask)
    assert torch.equal(none, m(z, t, mask, torch.zeros_like(z)))  # no estimate = zeros
    assert not torch.allclose(none, m(z, t, mask, torch.randn_like(z)))
    assert m.input_up_proj[0].in_features == 16


def test_self_conditioning_in_training_feeds_the_first_pass_to_half_the_batch():
    m = model(self_cond=True)
    sched = DiscreteSchedule.from_name("sqrt", 100)
    ids = torch.randint(5, 40, (4, 12))
    mask = y_mask([4] * 4)
    t = torch.tensor([10, 30, 50, 90])
    noise = torch.randn(2, 4, 12, 8)
    calls = []
    real = m.forward

    def spy(zt, tt, mk=None, prev=None, keep=None):
        calls.append((zt.shape[0], None if prev is None else prev.clone()))
        return real(zt, tt, mk, prev, keep)

    m.forward = spy
    u = torch.tensor([0.1, 0.9, 0.2, 0.7])  # examples 0 and 2 are self-conditioned
    training_losses(m, sched, ids, mask, t, noise, self_cond_u=u, monitor=False)
    (n_first, prev_first), (n_second, prev) = calls
    assert n_first == 2 and prev_first is None  # the first pass: only the chosen, without estimate
    assert prev[[1, 3]].abs().sum() == 0 and prev[[0, 2]][:, 4:].abs().sum() > 0
    assert prev[:, :4].abs().sum() == 0  # nothing on x
    calls.clear()
    training_losses(m, sched, ids, mask, t, noise, self_cond_u=torch.ones(4), monitor=False)
    assert len(calls) == 1  # no example chosen: no first pass


def test_output_bias_is_added_to_the_tied_logits():
    m = model(lm_bias=True)
    with torch.no_grad():
        m.lm_bias.copy_(torch.arange(40.0))
    z = torch.randn(2, 3, 8)
    torch.testing.assert_close(m.get_logits(z), z @ m.word_embedding.weight.t() + torch.arange(40.0))
    assert model().lm_bias is None


def test_length_head_learns_a_toy_length_rule():
    """Toy task: the target has len(x) - 2 tokens. Training only the length term, its loss falls
    and the head predicts the rule on new sources."""
    from diffuseq.diffusion import target_lengths
    m = model(length_head=True, seq_len=24).train()
    g = torch.Generator().manual_seed(1)

    def batch(n=64):
        ids = torch.zeros(n, 24, dtype=torch.long)
        mask = torch.zeros(n, 24, dtype=torch.long)
        for i in range(n):
            nx = int(torch.randint(3, 10, (1,), generator=g))
            ny = nx - 2
            ids[i, 0] = 2
            ids[i, 1:1 + nx] = torch.randint(5, 40, (nx,), generator=g)
            ids[i, 1 + nx] = 3
            ids[i, 2 + nx:2 + nx + ny] = torch.randint(5, 40, (ny,), generator=g)
            ids[i, 2 + nx + ny] = 3
            mask[i, 2 + nx:] = 1
        return ids, mask

    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        ids, mask = batch()
        want = target_lengths(ids, mask, 0)
        loss = torch.nn.functional.cross_entropy(m.length_logits(ids, mask), want)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::30]
    ids, mask = batch(200)
    acc = (m.length_logits(ids, mask).argmax(-1) == target_lengths(ids, mask, 0)).float().mean()
    assert acc > 0.95


def test_hidden_positions_do_not_change_the_kept_ones():
    """keep=False positions are invisible: whatever they hold, the kept outputs are the same."""
    m = model(segment_positions=True)
    z, t, mask = torch.randn(2, 12, 8), torch.tensor([10.0, 60.0]), y_mask([3, 5])
    keep = torch.arange(12)[None, :] < torch.tensor([[8], [10]])
    a = m(z, t, mask, keep=keep)
    z2 = torch.where(keep.unsqueeze(-1), z, torch.randn_like(z) * 5)
    b = m(z2, t, mask, keep=keep)
    torch.testing.assert_close(a[keep], b[keep])
    assert not torch.allclose(a, m(z2, t, mask))


def _prefix_keep(lengths, L):
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


def test_packing_plan_places_every_kept_position_once():
    """Packing.plan lays each example's kept positions out whole, in order, in rows no longer
    than the longest example, and declines where packing would save too little."""
    from diffuseq.model import Packing
    lengths = [12, 3, 7, 5, 9, 2, 12, 4]
    p = Packing.plan(_prefix_keep(lengths, 12))
    R, C = p.slot.shape
    assert C == 12 and R < len(lengths) and R * C >= sum(lengths)
    for i, n in enumerate(lengths):
        where = (p.owner == i).nonzero()
        assert len(where) == n and where[:, 0].unique().numel() == 1  # whole, in one row
        assert torch.equal(p.slot[p.owner == i], i * 12 + torch.arange(n))
        assert torch.equal(p.offset[p.owner == i], torch.arange(n))
    assert int((p.owner == -1).sum()) == R * C - sum(lengths)
    x = torch.randn(len(lengths), 12, 3)
    back = p.scatter(p.gather(x))
    keep = _prefix_keep(lengths, 12)
    assert torch.equal(back[keep], x[keep]) and not back[~keep].any()
    assert Packing.plan(_prefix_keep([12, 11, 12, 10], 12)) is None  # nothing to gain


def test_packed_rows_compute_what_the_batch_computes():
    """With packing the kept outputs and every gradient are those of the unpacked batch, for
    plain and segment positions, with and without self-conditioning; the rest are zeros."""
    L, lengths, src = 16, [16, 5, 11, 4, 9, 6], [4, 2, 5, 1, 3, 2]
    keep = _prefix_keep(lengths, L)
    for kw in (dict(), dict(segment_positions=True, self_cond=True)):
        m = model(seq_len=L, **kw)
        z = torch.randn(len(lengths), L, 8, requires_grad=True)
        t, mask = torch.rand(len(lengths)) * 100, y_mask(src, L)
        prev = torch.randn(len(lengths), L, 8) if kw else None
        outs, grads = [], []
        for pack in (False, True):
            m.pack = pack
            out = m(z, t, mask, prev, keep) * keep.unsqueeze(-1)
            params = [p for p in m.parameters() if p.requires_grad] + [z]
            g = torch.autograd.grad(out.square().sum(), params, allow_unused=True)
            outs.append(out)
            grads.append([torch.zeros_like(p) if x is None else x for p, x in zip(params, g)])
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(grads[0], grads[1]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        m.pack = True
        assert not m(z, t, mask, prev, keep)[~keep].any()


def test_init_from_copies_bert_weights_into_the_encoder(tmp_path):
    """--init_from a folder of BERT-named weights: each layer's q, k, v, output, feed-forward and
    norms, and the position embeddings, land in the denoiser as they are in the file; a resumed
    or bad folder is not read silently."""
    from safetensors.torch import save_file

    from diffuseq.trainer import Trainer
    from toy import tiny_args, toy_data
    W, F, N = 32, 64, 1
    g = torch.Generator().manual_seed(0)
    bert = {}
    for i in range(N):
        p = f"bert.encoder.layer.{i}."
        for name, shape in (("attention.self.query", (W, W)), ("attention.self.key", (W, W)),
                            ("attention.self.value", (W, W)), ("attention.output.dense", (W, W)),
                            ("attention.output.LayerNorm", (W,)), ("intermediate.dense", (F, W)),
                            ("output.dense", (W, F)), ("output.LayerNorm", (W,))):
            bert[p + name + ".weight"] = torch.randn(shape, generator=g)
            bert[p + name + ".bias"] = torch.randn(shape[0], generator=g)
    bert["bert.embeddings.position_embeddings.weight"] = torch.randn(512, W, generator=g)
    (tmp_path / "bert").mkdir()
    save_file(bert, str(tmp_path / "bert" / "model.safetensors"))
    d = toy_data(tmp_path / "data")
    tr = Trainer(tiny_args(d, tmp_path / "run", "--init_from", str(tmp_path / "bert"), "--learning_steps", "1"))
    sd = tr.model.state_dict()
    p = "bert.encoder.layer.0."
    assert torch.equal(sd["layers.0.attn.qkv.weight"], torch.cat(
        [bert[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]))
    assert torch.equal(sd["layers.0.fc1.weight"], bert[p + "intermediate.dense.weight"])
    assert torch.equal(sd["layers.0.ln2.bias"], bert[p + "output.LayerNorm.bias"])
    assert torch.equal(sd["position_embeddings.weight"], bert["bert.embeddings.position_embeddings.weight"][:24])
    with pytest.raises(FileNotFoundError, match="--init_from"):
        Trainer(tiny_args(d, tmp_path / "run2", "--init_from", str(tmp_path / "nothing")))
    assert not (tmp_path / "run2").exists()
