"""bench/baseline_transformer.py's decoder: the same maths as PyTorch's pre-norm decoder, and a
key-value cache that decodes one position per step with the outputs of decoding the whole prefix."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from baseline_transformer import Seq2Seq, beam_search  # noqa: E402


class Tok:
    pad_id, cls_id, sep_id = 0, 2, 3


@pytest.fixture
def model_and_src():
    """A random model of 2 + 2 layers over 40 tokens, and 6 sources, two of them padded. The decoder's
    weights are drawn larger than at initialisation, so that its outputs vary with the prefix (an
    untrained model repeats a token) and hypotheses end at different lengths."""
    torch.manual_seed(0)
    model = Seq2Seq(40, width=32, layers=2, heads=4, ffn=64).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0)
    src = torch.randint(4, 40, (6, 7))
    src[1, 4:], src[4, 2:] = Tok.pad_id, Tok.pad_id
    return model, src


def test_decoder_is_pytorchs_pre_norm_decoder(model_and_src):
    """Given its weights, nn.TransformerDecoder(norm_first=True) computes the same states, causal
    mask and source padding included: the hand-written layer changes no maths."""
    model, src = model_and_src
    ref = nn.TransformerDecoder(nn.TransformerDecoderLayer(32, 4, 64, batch_first=True, norm_first=True), 2,
                                norm=nn.LayerNorm(32)).eval()
    ref.layers.load_state_dict(model.decoder.state_dict())
    ref.norm.load_state_dict(model.decoder_norm.state_dict())
    prefix = torch.randint(4, 40, (6, 9))
    with torch.no_grad():
        memory = model.encode(src, Tok.pad_id)
        causal = torch.triu(torch.full((9, 9), float("-inf")), 1)
        want = ref(model.embed(prefix), memory, tgt_mask=causal, memory_key_padding_mask=src == Tok.pad_id)
        got = model.hidden(memory, src == Tok.pad_id, prefix)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cached_greedy_is_uncached_greedy(model_and_src):
    model, src = model_and_src
    cached, full = beam_search(model, src, Tok, beam=1), beam_search(model, src, Tok, beam=1, cache=False)
    assert cached == full
    assert max(map(len, full)) >= 10 and min(map(len, full)) < 10  # some end early, some run on


def test_cached_beam_is_uncached_beam(model_and_src):
    """A beam of 4 reorders the cache by the surviving beams at every step: the same hypotheses."""
    model, src = model_and_src
    cached, full = beam_search(model, src, Tok, beam=4), beam_search(model, src, Tok, beam=4, cache=False)
    assert cached == full
    assert max(map(len, full)) >= 10 and min(map(len, full)) < 10  # some end early, some run on
    assert full != beam_search(model, src, Tok, beam=1, cache=False)  # the beam did search


def test_cache_decodes_one_position_per_step(model_and_src):
    """Each decoder layer sees one new position per step, after a cache one position longer than
    at the step before; without the cache it sees the whole prefix, 1, 2, 3, ... positions."""
    model, src = model_and_src
    seen = []

    def record(layer, args):
        x, past = args[0], args[3] if len(args) > 3 else None
        seen.append((x.shape[1], 0 if past is None else past[0].shape[2]))
    hook = model.decoder[1].register_forward_pre_hook(record)
    try:
        beam_search(model, src, Tok, beam=4)
        cached, seen[:] = list(seen), []
        beam_search(model, src, Tok, beam=4, cache=False)
        full = list(seen)
    finally:
        hook.remove()
    steps = len(full)
    assert steps >= 10 and len(cached) == steps
    assert cached == [(1, i) for i in range(steps)]
    assert full == [(i + 1, 0) for i in range(steps)]


class WordTok(Tok):
    """Ids for the words of a tiny copy task: 4 + the word's number."""
    vocab_size = 20

    def encode_batch(self, texts):
        return [[4 + int(w) for w in t.split()] for t in texts]


def test_a_snapshot_is_the_model_a_shorter_run_keeps(monkeypatch):
    """train(--minutes 1 --snapshots 0.5) passes through train(--minutes 0.5): on a clock that ticks one
    second per training step, the snapshot's weights, step and best step are the shorter run's."""
    import baseline_transformer as bt

    clock = {"t": 0.0}
    monkeypatch.setattr(bt.time, "time", lambda: clock["t"])
    loss_of = bt.loss_of

    def ticking(*args, **kw):
        if torch.is_grad_enabled():  # a training step, not a validation batch
            clock["t"] += 1.0
        return loss_of(*args, **kw)
    monkeypatch.setattr(bt, "loss_of", ticking)

    g = torch.Generator().manual_seed(0)
    rows = [" ".join(str(int(x)) for x in torch.randint(0, 12, (5,), generator=g)) for _ in range(40)]
    pairs = [(r, r) for r in rows]

    def run(*extra):
        clock["t"] = 0.0
        a = bt.parser().parse_args(["--width", "16", "--layers", "1", "--bsz", "8", "--eval_every", "7", *extra])
        return bt.train(a, WordTok(), pairs, pairs[:8], 12)

    short, short_run = run("--minutes", "0.5")
    _, long_run = run("--minutes", "1", "--snapshots", "0.5", "2")
    assert [s["minutes"] for s in long_run["snapshots"]] == [0.5]  # 2 lies past the run's end
    snap = long_run["snapshots"][0]
    assert (snap["steps"], snap["best_step"]) == (short_run["steps"], short_run["best_step"]) == (30, 28)
    assert long_run["steps"] == 60 and long_run["best_step"] > 30
    for k, x in short.state_dict().items():
        assert torch.equal(snap["state"][k], x), k
