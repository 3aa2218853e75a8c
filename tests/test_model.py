"""The denoiser's options (diffuseq/model.py): segment positions, self-conditioning, output bias."""
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

    def spy(zt, tt, mk=None, prev=None):
        calls.append((zt.shape[0], None if prev is None else prev.clone()))
        return real(zt, tt, mk, prev)

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
