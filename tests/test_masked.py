"""The masked family (diffuseq/masked.py, masked_samplers.py): its loss against closed forms, its
decoders, the family seam and the one-line errors between families, and that it learns."""
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from diffuseq.config import parse_train_args
from diffuseq.masked import EPS, MaskDraws, MaskedFamily, corrupt, nested
from diffuseq.masked_samplers import mask_rates, mdlm_sample, topk_sample
from diffuseq.model import Denoiser, DenoiserConfig
from diffuseq.samplers import lowest
from toy import tiny_args

PAD, UNK, CLS, SEP, MASK = range(5)


def objective(**over):
    """What MaskedFamily.losses reads of an Objective: the run's options and the tokenizer's ids."""
    args = SimpleNamespace(coupled=False, time_cond=False, label_smoothing=0.0, mask_weighting="mdlm", visible_weight=0.0,
                           diffusion_steps=1000, seq_len=8, seed=0, bsz=4)
    vars(args).update(over)
    tok = SimpleNamespace(mask_id=MASK, pad_id=PAD, cls_id=CLS, sep_id=SEP)
    return SimpleNamespace(args=args, layout=SimpleNamespace(tokenizer=tok), device=torch.device("cpu"))


def draws(rate, u):
    B = rate.shape[0]
    return MaskDraws((rate * 1000).long(), torch.ones(B), rate, u, rate.clone(), u.clone())


def test_with_every_target_position_masked_the_loss_is_plain_cross_entropy():
    """At rate 1 every target position is masked, w(1) = 1 (mdlm), and the loss is the mean
    cross-entropy of the target tokens, computed here from the model's logits directly."""
    torch.manual_seed(0)
    V = 30
    net = Denoiser(DenoiserConfig(vocab_size=V, seq_len=8, hidden_dim=16, width=32, layers=1, heads=2, ffn=64,
                                  dropout=0.0)).eval()
    ids = torch.tensor([[CLS, 9, 10, SEP, 11, 12, 13, SEP], [CLS, 14, SEP, 15, 16, SEP, PAD, PAD]])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])
    terms = MaskedFamily().losses(objective(), net, ids, mask, draws(torch.ones(2), torch.rand(2, 8)), monitor=False)
    x = ids.masked_fill(mask.bool(), MASK)
    logits = net.get_logits(net(net.get_embeds(x), torch.zeros(2), mask))
    want = torch.stack([F.cross_entropy(logits[b][mask[b].bool()], ids[b][mask[b].bool()]) for b in range(2)])
    assert torch.allclose(terms["loss"], want, atol=1e-5)
    assert torch.allclose(terms["ce"], want, atol=1e-5)
    # coupled draws at rates 1 and 1: both copies fully masked, each example's terms the same mean
    coupled = MaskedFamily().losses(objective(coupled=True), net, ids, mask, draws(torch.ones(2), torch.rand(2, 8)),
                                    monitor=True)
    assert coupled["loss"].shape == (2,) and torch.allclose(coupled["loss"], want, atol=1e-5)
    assert torch.allclose(coupled["nll"], want, atol=1e-5)


class ExactConditionals:
    """A 'denoiser' over one-hot embeddings whose logits at the two target positions (3 and 4) are
    the exact conditionals of a joint p(y1, y2) over tokens 5..7 given what is not masked."""
    cfg = SimpleNamespace(length_head=False)

    def __init__(self, joint):
        self.joint = joint  # [3, 3]

    def get_embeds(self, ids):
        return F.one_hot(ids, 10).float()

    def get_logits(self, z):
        return z

    def __call__(self, emb, t, y, prev=None, keep=None):
        ids = emb.argmax(-1)
        out = torch.zeros_like(emb)
        for b in range(ids.shape[0]):
            for i, other in ((3, 4), (4, 3)):
                table = self.joint if i == 3 else self.joint.t()  # [this, other]
                if ids[b, other] == MASK:
                    p = table.sum(1)
                else:
                    p = table[:, ids[b, other] - 5] / table[:, ids[b, other] - 5].sum()
                out[b, i, :] = -1e9
                out[b, i, 5:8] = p.log()
        return out


def test_the_mdlm_weights_integrate_to_the_exact_log_likelihood_on_a_toy_distribution():
    """With the exact conditionals of a joint over two target tokens, the mdlm-weighted loss,
    averaged over t ~ U(0, 1) and the masks, is -log p(y1, y2) / 2 (nats per target position): the
    continuous-time ELBO is tight for the true model. Each mask pattern is enumerated (u = 0 masks
    a position at any rate, u = 1 never) with its probability t^k (1 - t)^(2 - k), and t on a
    midpoint grid. rdm's weights give another number, so the test tells weightings apart."""
    joint = torch.tensor([[0.30, 0.05, 0.05], [0.02, 0.20, 0.08], [0.10, 0.10, 0.10]])
    net = ExactConditionals(joint)
    J = 400
    t = (torch.arange(J) + 0.5) / J
    patterns = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    for y1, y2 in [(0, 0), (1, 2), (2, 1)]:
        ids = torch.tensor([[CLS, 9, SEP, 5 + y1, 5 + y2]]).repeat(J, 1)
        mask = torch.tensor([[0, 0, 0, 1, 1]]).repeat(J, 1)
        expected = {"mdlm": 0.0, "rdm": 0.0}
        for ua, ub in patterns:
            k = (ua == 0.0) + (ub == 0.0)
            p = t ** k * (1 - t) ** (2 - k)
            u = torch.tensor([[1.0, 1.0, 1.0, ua, ub]]).repeat(J, 1)
            for w in expected:
                loss = MaskedFamily().losses(objective(mask_weighting=w), net, ids, mask, draws(t, u),
                                             monitor=False)["loss"]
                expected[w] += float((p * loss).mean())
        nll = -math.log(joint[y1, y2]) / 2
        assert expected["mdlm"] == pytest.approx(nll, rel=1e-4)
        assert abs(expected["rdm"] - nll) > 0.05


def test_corruption_masks_the_target_at_its_rate_and_nested_draws_are_nested():
    g = torch.Generator().manual_seed(0)
    B, L = 4000, 20
    ids = torch.randint(5, 50, (B, L), generator=g)
    region = torch.zeros(B, L, dtype=torch.long)
    region[:, 5:] = 1
    rate = torch.rand(B, generator=g).clamp(min=EPS)
    zt, masked = corrupt(ids, region, rate, torch.rand(B, L, generator=g), MASK)
    assert not masked[:, :5].any() and torch.equal(zt[:, :5], ids[:, :5])
    assert torch.equal(zt[masked], torch.full_like(zt[masked], MASK)) and torch.equal(zt[~masked], ids[~masked])
    assert float(masked[:, 5:].float().mean()) == pytest.approx(float(rate.mean()), abs=0.01)
    rate2 = torch.rand(B, generator=g).clamp(min=EPS)
    rates, us = nested(rate, rate2, torch.rand(B, L, generator=g), torch.rand(B, L, generator=g))
    _, m = corrupt(ids.repeat(2, 1), region.repeat(2, 1), rates, us, MASK)
    hi, lo = m[:B], m[B:]
    assert torch.equal(lo & hi, lo)  # the lower rate's mask lies inside the higher's
    share = lo[:, 5:].float().mean(1)
    assert float(share.mean()) == pytest.approx(float(torch.minimum(rate, rate2).mean()), abs=0.01)


# ------------------------------------------------------------------ decoders
class FixedModel:
    """predict(x, t) -> the same log-probabilities [N, V] whatever x is; counts calls, keeps inputs."""

    def __init__(self, logp, time_independent=True):
        self.logp, self.time_independent, self.calls, self.seen = logp, time_independent, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.seen.append(x.clone())
        return self.logp


def batch(B=3, L=12, V=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.zeros(B, L, dtype=torch.bool)
    rows[:, 4:] = True
    rows[min(1, B - 1), 9:] = False  # a shorter region
    x = torch.randint(5, V, (B, L), generator=g).masked_fill(rows, MASK)
    logp = torch.randn(int(rows.sum()), V, generator=g).log_softmax(-1)
    return x, rows, logp


def test_a_one_step_decode_is_the_argmax():
    x, rows, logp = batch()
    for run in (lambda m: topk_sample(m, x, rows, 1, mask_id=MASK),
                lambda m: mdlm_sample(m, x, rows, 1, temperature=1.0, mask_id=MASK,
                                      generator=torch.Generator().manual_seed(1))):
        model = FixedModel(logp)
        out, score = run(model)
        assert model.calls == 1
        assert torch.equal(out[rows], logp.argmax(-1)) and torch.equal(out[~rows], x[~rows])
        assert torch.allclose(score[rows], logp.max(-1).values)


def test_topk_remasking_keeps_exactly_the_k_most_confident_tokens():
    """After the first of 4 steps (linear rates 1, .75, .5, .25, 0) the model's next input has
    round(0.75 n) positions masked in each example: those whose written token had the lowest
    log-probability; the others hold their tokens."""
    x, rows, logp = batch()
    model = FixedModel(logp)
    topk_sample(model, x, rows, 4, mask_id=MASK)
    second = model.seen[1]
    best, first = torch.zeros(x.shape), torch.full(x.shape, -1)
    best[rows], first[rows] = logp.max(-1).values, logp.argmax(-1)
    for b in range(x.shape[0]):
        n = int(rows[b].sum())
        k = round(0.75 * n)
        masked = (second[b] == MASK) & rows[b]
        assert int(masked.sum()) == k
        conf = best[b][rows[b]]
        assert float(conf[masked[rows[b]]].max()) <= float(conf[~masked[rows[b]]].min())
        kept = rows[b] & ~masked
        assert torch.equal(second[b][kept], first[b][kept])  # the others hold the token written
    score = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    assert lowest(score, torch.ones(1, 5, dtype=torch.bool), torch.tensor([2])).tolist() == \
        [[True, False, False, True, False]]


class InputModel(FixedModel):
    """Log-probabilities that depend on the input: the fixed ones rolled by the number of written
    positions, so a prediction reused after the input changed gives other tokens."""

    def __call__(self, x, t):
        self.calls += 1
        self.seen.append(x.clone())
        return self.logp.roll(int((x != MASK).sum()), dims=-1)


def test_the_cached_update_makes_no_model_call_when_nothing_changes():
    """MDLM's sampler with 40 steps on a region of 5 tokens: a model that does not see t is called
    at the start and after each step that unmasked something, exactly, and the output is that of
    the sampler calling every step with the same draws; a model that sees t is called every step."""
    x, rows, logp = batch(B=1, L=10)  # positions 4 to 8 masked
    cached, every = InputModel(logp, True), InputModel(logp, False)
    a = mdlm_sample(cached, x, rows, 40, mask_id=MASK, generator=torch.Generator().manual_seed(3))
    b = mdlm_sample(every, x, rows, 40, mask_id=MASK, generator=torch.Generator().manual_seed(3))
    changes = sum(not torch.equal(p, q) for p, q in zip(every.seen, every.seen[1:]))
    assert every.calls == 40 and 1 < cached.calls == 1 + changes < 40
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (a[0][rows] == MASK).any()


def test_mask_rates_fall_from_one_to_zero():
    for s in ("linear", "cosine"):
        r = mask_rates(7, s)
        assert r[0] == 1 and r[-1] == 0 and bool((r[1:] < r[:-1]).all())
    with pytest.raises(ValueError, match="schedule"):
        mask_rates(3, "square")


# ------------------------------------------------------------------ the family end to end
def word_map_data(folder, n=300, seed=0):
    """Pairs whose target writes each source word w<i> as its partner v<i>, 3 to 6 words."""
    import json
    import random
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        with open(folder / f"{split}.jsonl", "w") as f:
            for _ in range(n if split == "train" else 40):
                idx = [rng.randrange(12) for _ in range(rng.randint(3, 6))]
                f.write(json.dumps({"src": " ".join(f"w{i}" for i in idx), "trg": " ".join(f"v{i}" for i in idx)})
                        + "\n")
    return folder


def masked_run(tmp_path, steps=300, *extra):
    from diffuseq.trainer import Trainer
    data = word_map_data(tmp_path / "data")
    args = tiny_args(data, tmp_path / "run", "--recipe", "bible-masked", "--learning_steps", str(steps),
                     "--save_interval", str(steps), "--eval_interval", str(steps), "--log_interval", "100",
                     "--width", "64", "--hidden_dim", "64", "--lr", "3e-3", "--warmup_steps", "10", "--dropout", "0",
                     "--label_smoothing", "0", "--ema_rate", "0.9", *extra)
    return Trainer(args), data


def test_the_masked_family_learns_and_decodes(tmp_path):
    """300 steps on pairs that map each word to a partner: the validation cross-entropy of the
    masked tokens falls to a fifth of its untrained value, the family is saved in args.json, and
    the trained model, decoding from every target token masked, writes most target words right
    (untrained: about 1 in 12)."""
    from diffuseq import DiffuSeq
    from diffuseq.data.dataset import read_pairs
    tr, data = masked_run(tmp_path)
    before = tr.validate()["nll"]
    tr.train()
    after = tr.validate()["nll"]
    assert after < 0.2 * before, (before, after)
    assert '"family": "masked"' in (tmp_path / "run" / "ckpt_0000300" / "args.json").read_text()
    model = DiffuSeq.from_pretrained(str(tmp_path / "run"), device="cpu")
    pairs = list(read_pairs(str(data / "valid.jsonl")))[:20]
    out = model.generate([s for s, _ in pairs], sampler="topk", steps=5, use_saved=False)
    hits = sum(a == b for o, (_, r) in zip(out, pairs) for a, b in zip(o.split(), r.split()))
    total = sum(len(r.split()) for _, r in pairs)
    assert hits / total > 0.8, list(zip(out, pairs))[:3]


def test_a_foreign_familys_checkpoint_gets_a_one_line_error(tmp_path):
    """A masked checkpoint decoded with a Gaussian sampler, or resumed as a Gaussian run, stops
    with one line naming the families (no traceback)."""
    tr, data = masked_run(tmp_path, 2)
    tr.train()
    run = str(tmp_path / "run")
    dec = subprocess.run([sys.executable, "run_decode_solver.py", "--model_dir", run, "--sampler", "dpm",
                          "--max_examples", "2", "--out_dir", str(tmp_path / "out"), "--progress", "false"],
                         capture_output=True, text=True)
    assert dec.returncode == 2 and "Traceback" not in dec.stderr
    assert dec.stderr.strip().count("\n") == 0 and "masked family" in dec.stderr and "dpm" in dec.stderr
    with pytest.raises(Exception, match="masked-family checkpoint") as e:
        from diffuseq.trainer import Trainer
        Trainer(parse_train_args(["--resume_checkpoint", run, "--family", "gaussian", "--schedule_sampler",
                                  "uniform", "--learning_steps", "4"]))
    assert "\n" not in str(e.value)


def test_gaussian_options_on_a_masked_run_are_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--recipe", "bible-tiny", "--family", "masked"])
    err = capsys.readouterr().err
    assert "--family masked does not use" in err and "--learned_mean_embed" in err
    with pytest.raises(SystemExit):
        parse_train_args(["--recipe", "bible-tiny", "--visible_weight", "1"])
    assert "--family gaussian does not use --visible_weight" in capsys.readouterr().err


def test_no_module_outside_the_families_asks_which_family_runs():
    """The seam: only the family modules know what a family is; everything else calls them."""
    import re
    from pathlib import Path
    own = {"family.py", "gaussian.py", "masked.py", "masked_samplers.py"}
    asks = re.compile(r"""family(\.name)?\s*(==|!=)|["'](gaussian|masked)["']\s*(==|!=|in)|(==|!=)\s*["'](gaussian|masked)["']""")
    root = Path(__file__).parent.parent
    for f in [*(root / "diffuseq").rglob("*.py"), *(root / "bench").glob("*.py"), *root.glob("*.py")]:
        if f.name not in own:
            hits = [line for line in f.read_text().splitlines() if asks.search(line)]
            assert not hits, (f.name, hits)


def test_dedup_drops_a_token_equal_to_the_one_before_it():
    from diffuseq.masked_samplers import dedup
    rows = torch.tensor([[False, True, True, True, True, True], [False, True, True, True, False, False]])
    x = torch.tensor([[7, 9, 9, 8, 8, 3], [7, 5, 6, 6, 0, 0]])
    score = torch.arange(12.0).view(2, 6)
    out, sc = dedup(x, score, rows, PAD)
    assert out.tolist() == [[7, 9, 8, 3, PAD, PAD], [7, 5, 6, PAD, 0, 0]]
    assert sc.tolist() == [[0.0, 1.0, 3.0, 5.0, 0.0, 0.0], [6.0, 7.0, 8.0, 0.0, 10.0, 11.0]]


def test_a_gaussian_checkpoint_decoded_or_resumed_as_masked_gets_a_one_line_error(tmp_path):
    """The other direction: a Gaussian checkpoint decoded with a masked sampler, or resumed as a
    masked run, stops with one line as well."""
    from diffuseq.trainer import Trainer
    from toy import toy_data
    run = tmp_path / "run"
    Trainer(tiny_args(toy_data(tmp_path / "data"), run, "--learning_steps", "2", "--eval_interval", "0")).train()
    dec = subprocess.run([sys.executable, "run_decode_solver.py", "--model_dir", str(run), "--sampler", "topk",
                          "--max_examples", "2", "--out_dir", str(tmp_path / "out"), "--progress", "false"],
                         capture_output=True, text=True)
    assert dec.returncode == 2 and "Traceback" not in dec.stderr
    assert dec.stderr.strip().count("\n") == 0 and "gaussian family" in dec.stderr and "topk" in dec.stderr
    with pytest.raises(Exception, match="gaussian-family checkpoint") as e:
        Trainer(parse_train_args(["--resume_checkpoint", str(run), "--family", "masked", "--learning_steps", "4"]))
    assert "\n" not in str(e.value)


def test_the_best_checkpoint_follows_the_familys_selection_column(tmp_path):
    """best.json names the checkpoint with the lowest summed validation loss in a Gaussian run,
    and with the lowest cross-entropy of the masked tokens in a masked run (the summed loss also
    holds the length head's term, which overfits small data while the masked tokens improve)."""
    import json
    from diffuseq.trainer import Trainer
    from toy import toy_data
    script = [dict(loss=1.0, nll=5.0), dict(loss=2.0, nll=3.0), dict(loss=3.0, nll=4.0), dict(loss=4.0, nll=3.5)]
    gauss = Trainer(tiny_args(toy_data(tmp_path / "data"), tmp_path / "gauss", "--learning_steps", "4",
                              "--eval_interval", "1", "--save_interval", "1"))
    masked, _ = masked_run(tmp_path, 4, "--eval_interval", "1", "--save_interval", "1")
    for tr, run, step, value in ((gauss, "gauss", 1, 1.0), (masked, "run", 2, 3.0)):
        answers = iter(script)
        tr.validate = lambda: dict(next(answers))
        tr.train()
        assert json.loads((tmp_path / run / "best.json").read_text()) == \
            {"checkpoint": f"ckpt_{step:07d}", "valid_loss": value}
