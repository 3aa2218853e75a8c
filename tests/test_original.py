"""The original DiffuSeq as this toolkit runs it: its decoders against closed forms, the import of
its checkpoints, the text clean-up of its scorer, and (where ../shared/peer is set up) equal
outputs from equal inputs against its own code."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffuseq import checkpoint as ckpt
from diffuseq.evaluate import main as eval_main
from diffuseq.importer import OriginalRunError, import_original
from diffuseq.model import Denoiser, DenoiserConfig
from diffuseq.pipeline import DiffuSeq
from diffuseq.samplers import SAMPLERS, ancestral_sample, original_v2_solve
from diffuseq.schedule import DiscreteSchedule, NoiseScheduleVP
from diffuseq.tokenizer import load_bert_vocab

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


# --------------------------------------------------------------------------------- decoders

def test_original_v2_solver_replaces_its_state_by_the_prediction():
    """With a denoiser that always predicts y0, DiffuSeq-v2's solver ends at
    y0 * (alpha_t + sigma_t (1 - alpha_s) / sigma_s) over its last step s -> t = 1/T, whatever the
    starting noise (the state is replaced by the prediction before each update, so D1 = 0 and
    the noise reaches only the first call); the model is told t * T on a grid uniform in time from
    T, and is called `steps` times; the source stays as it was laid."""
    T, steps = 200, 5
    ns = NoiseScheduleVP(DiscreteSchedule.from_name("sqrt", T).alphas_cumprod)
    y0 = torch.randn(2, 6, 4)
    x_start = torch.randn(2, 6, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]] * 2)
    seen = []

    def oracle(z, t):
        seen.append(t[0].item())
        return y0.clone()

    outs = [original_v2_solve(oracle, ns, torch.randn(2, 6, 4) * 5, x_start, mask, steps=steps)[0] for _ in range(2)]
    torch.testing.assert_close(outs[0], outs[1])
    grid = torch.linspace(1.0, 1.0 / T, steps + 1, dtype=torch.float32).double()
    s, t = grid[-2], grid[-1]
    a_t, a_s = ns.marginal_alpha(t).item(), ns.marginal_alpha(s).item()
    s_t, s_s = ns.marginal_std(t).item(), ns.marginal_std(s).item()
    want = y0 * (a_t + s_t * (1 - a_s) / s_s)
    y = mask.bool()
    torch.testing.assert_close(outs[0][y], want[y], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0][~y], x_start[~y])
    assert seen[:steps] == pytest.approx([float(v) * T for v in grid[:steps]], rel=1e-5)
    assert len(seen) == 2 * steps


def test_original_v1_chain_is_uncentred_with_beta_noise():
    """The papers' chain on a 4-step schedule, written out: z_{n-1} = c1 z0 + c2 z_n (not centred on
    m) + sqrt(beta_n) eps for n > 0, each target token then replaced by m where its uniform draw
    is below r sqrt(beta_n), the source laid back each step."""
    sched = DiscreteSchedule.from_name("sqrt", 4)
    y0, m = torch.randn(1, 5, 3), torch.randn(3)
    x_start, mask = torch.randn(1, 5, 3), torch.tensor([[0, 1, 1, 1, 1]])
    z = torch.randn(1, 5, 3)
    out, _ = ancestral_sample(lambda z, t: y0.clone(), sched, z, x_start, mask, m=m, variance="large",
                              denoise_rate=0.7, generator=torch.Generator().manual_seed(3), centre=False)
    g = torch.Generator().manual_seed(3)
    want = torch.where(mask.bool()[..., None], z, x_start)
    for n in (3, 2, 1, 0):
        want = sched.posterior_mean_coef1[n] * y0 + sched.posterior_mean_coef2[n] * want
        if n > 0:
            std = sched.betas[n] ** 0.5
            want = want + std * torch.randn(want.shape, generator=g)
            hit = (torch.rand(want.shape[:2], generator=g) < 0.7 * std) & mask.bool()
            want = torch.where(hit[..., None], m.expand_as(want), want)
        want = torch.where(mask.bool()[..., None], want.float(), x_start)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_original_v1_shorter_chain_is_the_v1_codes_gapped_ddim():
    """original-v1 with K < T steps, as the v1 code's --step K: DDIM (eta 0) at timesteps T-1,
    T-1-g, ... (g = T // K), each update landing on the level of the timestep just below the one
    it started from, written out for T = 8, K = 2 (timesteps 7 and 3, landing on 6 and 2)."""
    sched = DiscreteSchedule.from_name("sqrt", 8)
    y0, z = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    x_start, mask = torch.randn(1, 5, 3), torch.tensor([[0, 1, 1, 1, 1]])
    seen = []

    def oracle(x, t):
        seen.append(int(t[0]))
        return y0.clone()

    out, _ = SAMPLERS["original-v1"].run(oracle, sched, z, x_start, mask, steps=2, t_start=None, options=None,
                                         m=None, clamp=None, clamp_step=0, clamp_first=True, absorb_rate=0.0,
                                         generator=None, progress=None)
    assert seen == [7, 3]
    acp = torch.tensor(sched.alphas_cumprod)
    want = torch.where(mask.bool()[..., None], z, x_start)
    for n in (7, 3):
        eps = (want / acp[n].sqrt() - y0) / (1 / acp[n] - 1).sqrt()
        want = y0 * acp[n - 1].sqrt() + (1 - acp[n - 1]).sqrt() * eps
        want = torch.where(mask.bool()[..., None], want.float(), x_start)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="DiffuSeq-v2's code lacks"):
        SAMPLERS["original-v1"].run(oracle, sched, z, x_start, mask, steps=2, t_start=None, options=None,
                                    m=torch.zeros(3), clamp=None, clamp_step=0, clamp_first=True, absorb_rate=0.0,
                                    generator=None, progress=None)


def test_v2_models_decode_in_fp16_with_the_original_samplers_on_a_gpu_only():
    from types import SimpleNamespace
    from diffuseq.decode_cli import decode_dtype
    v2, v1 = (SimpleNamespace(args=SimpleNamespace(learned_mean_embed=m), device=torch.device(d))
              for m, d in ((True, "cuda"), (False, "cuda")))
    assert decode_dtype("auto", "original-v2", v2) == torch.float16
    assert decode_dtype("auto", "original-v1", v2) == torch.float16
    assert decode_dtype("auto", "dpm", v2) is None and decode_dtype("auto", "original-v1", v1) is None
    v2.device = torch.device("cpu")  # CUDA autocast leaves CPU tensors in fp32
    assert decode_dtype("auto", "original-v2", v2) is None
    assert decode_dtype("fp16", "dpm", v1) == torch.float16 and decode_dtype("fp32", "original-v2", v2) is None


def test_the_original_decoders_are_listed_in_help():
    for script in ("run_decode.py", "run_decode_solver.py"):
        out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True).stdout
        assert "original-v1" in out and "original-v2" in out and "--cleanup" in out
    assert {"original-v1", "original-v2"} <= set(SAMPLERS)


# --------------------------------------------------------------------------------- import

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["how", "can", "i", "be", "a", "good", "geologist", "?", "what", "should", "do", "to", "great"]


def _fake_original_run(folder, v2=True, D=8, W=16, L=12, layers=2, heads=2, ffn=32, seed=0):
    """An original run folder written from one of our models through the original's names (the
    inverse of the import, spelled out here), with word_embedding.weight and lm_head.weight
    different, as the original's EMA files have them. Returns our model."""
    torch.manual_seed(seed)
    V = len(SPECIAL) + len(WORDS)
    cfg = DenoiserConfig(vocab_size=V, seq_len=L, hidden_dim=D, width=W, layers=layers, heads=heads, ffn=ffn,
                         dropout=0.0, diffusion_steps=50, learned_mean_embed=v2, lm_bias=True)
    ours = Denoiser(cfg).eval()
    sd = ours.state_dict()
    theirs = {"position_ids": torch.arange(512)[None], "word_embedding.weight": torch.randn(V, D),
              "lm_head.weight": sd["word_embedding.weight"], "lm_head.bias": sd["lm_bias"],
              "position_embeddings.weight": torch.cat([sd["position_embeddings.weight"], torch.randn(512 - L, W)]),
              "LayerNorm.weight": sd["ln.weight"], "LayerNorm.bias": sd["ln.bias"]}
    if v2:
        theirs["mean_embed"] = sd["mean_embed"]
    for k, v in sd.items():
        if k.split(".")[0] in ("time_embed", "input_up_proj", "output_down_proj"):
            theirs[k] = v
    for i in range(layers):
        p, q = f"input_transformers.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            for j, name in enumerate(("query", "key", "value")):
                theirs[f"{p}attention.self.{name}.{kind}"] = sd[f"{q}attn.qkv.{kind}"].chunk(3)[j]
            for a, b in (("attn.out", "attention.output.dense"), ("ln1", "attention.output.LayerNorm"),
                         ("fc1", "intermediate.dense"), ("fc2", "output.dense"), ("ln2", "output.LayerNorm")):
                theirs[f"{p}{b}.{kind}"] = sd[f"{q}{a}.{kind}"]
    folder.mkdir(parents=True)
    torch.save(theirs, folder / "ema_0.9999_000005.pt")
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": heads}))
    args = {"seq_len": L, "hidden_dim": D, "hidden_t_dim": D, "diffusion_steps": 50, "noise_schedule": "sqrt",
            "vocab": "bert", "learned_mean_embed": v2, "denoise": v2, "denoise_rate": 0.5, "dropout": 0.1,
            "ema_rate": "0.9999", "batch_size": 4, "microbatch": 4, "predict_xstart": True,
            "rescale_timesteps": True, "learn_sigma": False, "timestep_respacing": "", "dataset": "qqp"}
    (folder / "training_args.json").write_text(json.dumps(args))
    return ours


@pytest.mark.parametrize("v2", [True, False])
def test_import_gives_the_same_denoiser(tmp_path, v2):
    ours = _fake_original_run(tmp_path / "orig", v2=v2)
    path = import_original(str(tmp_path / "orig"), str(tmp_path / "imported"))
    assert os.path.basename(path) == "ckpt_0000005"
    model = DiffuSeq.from_pretrained(path, "cpu")
    assert model.args.recipe == ("original-v2" if v2 else "original-v1")
    assert (model.args.layout, model.args.loss_positions, model.args.lm_bias) == ("original", "all", True)
    assert model.model.cfg.heads == 2 and model.tokenizer.vocab_size == ours.cfg.vocab_size
    z, t = torch.randn(3, 12, 8), torch.tensor([0, 17, 49])
    torch.testing.assert_close(model.model(z, t), ours(z, t), rtol=0, atol=1e-6)
    # the word embedding is the one the original's decoders use (lm_head.weight)
    torch.testing.assert_close(model.model.word_embedding.weight, ours.word_embedding.weight)
    out = model.generate(["how can i be a good geologist?"], sampler="original-v2", steps=3, lengths="full")
    assert isinstance(out[0], str)


def test_import_counts_the_originals_batch_per_process(tmp_path):
    """The original's batch_size is per process; our --bsz is global: a v2 run of 425 (its train
    script's 2 processes) becomes 850, a run of another size takes --processes (default 1)."""
    from diffuseq.config import load_args
    _fake_original_run(tmp_path / "a")
    targs = json.loads((tmp_path / "a" / "training_args.json").read_text())
    (tmp_path / "a" / "training_args.json").write_text(json.dumps(dict(targs, batch_size=425, microbatch=425)))
    path = import_original(str(tmp_path / "a"), str(tmp_path / "a_in"))
    args = load_args(os.path.join(path, "args.json"))
    assert (args.bsz, args.microbatch) == (850, 425)
    assert json.loads((tmp_path / "a_in" / "imported.json").read_text())["processes"] == 2
    _fake_original_run(tmp_path / "b")  # batch_size 4, microbatch 4
    assert load_args(os.path.join(import_original(str(tmp_path / "b"), str(tmp_path / "b1")), "args.json")).bsz == 4
    args = load_args(os.path.join(import_original(str(tmp_path / "b"), str(tmp_path / "b3"), processes=3),
                                  "args.json"))
    assert (args.bsz, args.microbatch) == (12, 4)
    assert (args.ema_embedding, args.grad_accumulation, args.sampler_update, args.replicated_draws) == (
        "live", "sum", "microbatch", True)


def test_import_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(OriginalRunError, match="no ema_<rate>_<step>.pt"):
        import_original(str(tmp_path))
    _fake_original_run(tmp_path / "a")
    (tmp_path / "a" / "training_args.json").write_text("{not json")
    with pytest.raises(OriginalRunError, match=r"a/training_args.json: not JSON"):
        import_original(str(tmp_path / "a"))
    _fake_original_run(tmp_path / "b")
    args = json.loads((tmp_path / "b" / "training_args.json").read_text())
    (tmp_path / "b" / "training_args.json").write_text(json.dumps(dict(args, predict_xstart=False)))
    with pytest.raises(OriginalRunError, match="predict_xstart"):
        import_original(str(tmp_path / "b"))
    _fake_original_run(tmp_path / "c")
    os.remove(tmp_path / "c" / "vocab.txt")
    with pytest.raises(OriginalRunError, match="no vocab.txt"):
        import_original(str(tmp_path / "c"))


def test_import_of_a_file_that_would_run_code_is_refused(tmp_path):
    from test_checkpoint import RunsCode
    _fake_original_run(tmp_path / "run")
    marker = tmp_path / "code_ran"
    torch.save({"w": torch.zeros(2), "x": RunsCode(str(marker))}, tmp_path / "run" / "ema_0.9999_000009.pt")
    r = subprocess.run([sys.executable, "-m", "diffuseq.checkpoint", "import-original", str(tmp_path / "run"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "refused" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out" / "ckpt_0000009").exists()


# --------------------------------------------------------------------------------- text

def test_original_cleanup_keeps_what_follows_a_sep(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tok = load_bert_vocab(str(tmp_path))
    ids = [[tok.cls_id] + tok.encode("how can i") + [tok.sep_id, tok.unk_id] + tok.encode("be good")
           + [tok.pad_id, tok.pad_id]]
    assert tok.decode_batch(ids) == ["how can i"]
    assert tok.decode_batch(ids, cleanup="original") == ["how can i [UNK] be good"]


def test_scorer_cleans_as_the_original(tmp_path, capsys):
    f = tmp_path / "out.jsonl"
    f.write_text(json.dumps({"source": "[CLS] a b [SEP] [SEP]", "reference": "[CLS] how can i be good [SEP]",
                             "recover": "[CLS] how can i be good [SEP] [PAD] [PAD]"}) + "\n")
    assert eval_main([str(f), "--clean", "original", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["model"]["sentence_bleu"] == pytest.approx(100)
    assert eval_main([str(f), "--json", str(tmp_path / "s2.json")]) == 0
    assert json.loads((tmp_path / "s2.json").read_text())["model"]["sentence_bleu"] < 100


# --------------------------------------------------------------------------------- the original's code

def need_peer(why):
    """Skip when the original's code is not set up here, but fail under CI=true: CI sets it up
    (.ci/run), so a skip there would leave the claim of equal outputs unguarded."""
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the equality tests must run in CI: {why}")
        pytest.skip(why)


@pytest.mark.parametrize("branch", ["v2", "main"])
def test_equal_outputs_to_the_original_code(tmp_path, branch):
    """A checkpoint the original trains (3 steps of its tiny shape on qqp_small), imported: the
    same token ids and masks from the same pairs, also where pairs are too long and are cut, the
    same prediction of z_0 (max abs difference <= 1e-5 in fp32), the same loss terms on the same
    batch, timesteps and draws, and the same tokens from v2's solver from the same starting noise
    (v2), or from the v1 code's shorter chain (v1, --step 10 of 2,000). Skips when ../shared/peer
    is not set up (bash ../shared/peer/setup.sh); fails then under CI=true."""
    import bench_original
    need_peer(bench_original.peer_ready(branch))
    last = ("solver",) if branch == "v2" else ("gapped",)
    rec = bench_original.compare(branch, None, train_steps=3, n=8,
                                 parts=("tokens", "truncation", "forward", "losses") + last, work=str(tmp_path),
                                 gap_steps=10)
    assert torch.is_grad_enabled()  # the comparison leaves autograd as it found it
    assert rec["tokens_rows_diff"] == 0
    assert rec["truncation_rows_cut"] >= 4 and rec["truncation_rows_diff"] == 0
    assert rec["forward_diff"] <= 1e-5
    for k in ("mse", "nll", "loss"):
        assert rec[f"loss_{k}_diff"] <= 1e-5 * max(1.0, rec[f"loss_{k}_mean"]), k
    if branch == "v2":
        assert rec["solver_state_diff"] <= 1e-4
        assert rec["solver_token_agreement"] == 1.0 and rec["solver_pipeline_token_agreement"] == 1.0
    else:
        assert rec["gapped_token_agreement"] == 1.0


@pytest.mark.parametrize("branch", ["v2", "main"])
def test_twenty_training_steps_equal_the_originals(tmp_path, branch):
    """20 optimiser steps of the original's own TrainLoop and of our Trainer with the original-*
    profile, from the same weights on the same batches, ours replaying the original's draws
    (microbatches of 4 in batches of 16, the loss-aware sampler warming up on T = 8): the same
    importance weights, losses, weights and EMA weights (max abs difference <= 1e-5), the EMA
    holding the live word embedding as the original's file does."""
    import bench_original
    need_peer(bench_original.peer_ready(branch))
    rec = bench_original.compare_training(branch, steps=20, work=str(tmp_path))
    assert rec["train_sampler_warm_at_end"] and rec["train_sampler_weight_spread"] > 0.1
    for k in ("sampler_weight", "loss", "sampler_history", "weights", "ema"):
        assert rec[f"train_{k}_diff"] <= 1e-5, k
    assert rec["train_weights_moved"] > 100 * rec["train_weights_diff"]
    assert rec["train_ema_averaged_embedding_gap"] > 1e-4  # the rule is what makes the EMA equal


def test_export_and_import_round_trip(tmp_path):
    """Our weights under the original's names (for the original code to start from) come back
    unchanged through the import's mapping."""
    from diffuseq.importer import convert_state, export_original
    ours = _fake_original_run(tmp_path / "run")
    back = convert_state(export_original(ours), ours.cfg.seq_len, True)
    assert set(back) == set(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(back[k], v), k


# --------------------------------------------------------------------------------- the original's scorer

def test_scorer_equals_the_original_script(tmp_path):
    """`diffuseq-eval --protocol original` and the original's scripts/eval_seq2seq.py on the same
    folders of outputs (bench/bench_scorer.py, 40 inputs): every number it prints within 1e-4.
    Skips when ../shared/peer is not set up (bash ../shared/peer/setup.sh)."""
    import bench_scorer
    need_peer(bench_scorer.peer_ready())
    rec = bench_scorer.compare(n=40, work=str(tmp_path))
    assert rec["missing"] == []
    diffs = {k: v for k, v in rec.items() if k.endswith("_diff")}
    assert set(diffs) == {f"{p}{k}_diff" for p in ("", "mbr_") for k in ("bleu", "rouge_l", "dist1")} | {
        "avg_len_diff", "self_bleu_diff", "div4_diff"}
    assert all(v <= 1e-4 for v in diffs.values()), diffs


@pytest.mark.parametrize("flags,want", [(["--sampler", "original-v1"], "original"),
                                        (["--sampler", "original-v2", "--step", "2"], "original"),
                                        (["--sampler", "original-v2", "--step", "2", "--cleanup", "cut"], "cut"),
                                        (["--sampler", "ancestral", "--step", "2"], "cut")])
def test_original_samplers_imply_the_original_cleanup(tmp_path, monkeypatch, flags, want):
    """Decoding with the original's decoders cleans the text as the original's scorer does,
    unless --cleanup says otherwise."""
    from diffuseq import decode_cli
    _fake_original_run(tmp_path / "orig")
    model_dir = import_original(str(tmp_path / "orig"), str(tmp_path / "imported"))
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "how can i be a good geologist ?", "trg": "how"}) + "\n")
    seen = []

    def spy(*args, **kw):
        seen.append(kw["cleanup"])
        return decode_file(*args, **kw)

    decode_file = decode_cli.decode_file
    monkeypatch.setattr(decode_cli, "decode_file", spy)
    assert decode_cli.main(["--model_dir", model_dir, "--input", str(tmp_path / "in.jsonl"), "--lengths", "full", "--device", "cpu", "--progress", "false",
                            "--out_dir", str(tmp_path / "out"), *flags]) == 0
    assert seen == [want]


def test_the_original_cleanup_writes_the_reference_as_laid_and_decoded(tmp_path):
    """With --cleanup original the reference is what the original's decoders write: the target
    as laid in seq_len (a long pair cut) and decoded, special tokens dropped; otherwise the
    user's string verbatim."""
    from diffuseq import decode_cli
    _fake_original_run(tmp_path / "orig")  # seq_len 12
    model_dir = import_original(str(tmp_path / "orig"), str(tmp_path / "imported"))
    trg = "What should I do to be a great geologist ? how can i be a good geologist ?"
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "how can i be a good geologist ?", "trg": trg}) + "\n")
    refs = {}
    for cleanup in ("original", "cut"):
        out = tmp_path / cleanup
        assert decode_cli.main(["--model_dir", model_dir, "--input", str(tmp_path / "in.jsonl"), "--lengths", "full",
                                "--device", "cpu", "--progress", "false", "--out_dir", str(out), "--step", "2",
                                "--cleanup", cleanup]) == 0
        refs[cleanup] = json.loads(next(out.rglob("*.jsonl")).read_text())["reference"]
    assert refs["cut"] == trg
    words = refs["original"].split()
    assert 0 < len(words) < 12 and trg.lower().split()[:len(words)] == words
    assert "[" not in refs["original"]
