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

def test_equal_outputs_to_the_original_code(tmp_path):
    """A checkpoint the original trains (3 steps of its tiny shape on qqp_small), imported: the
    same token ids and masks from the same pairs, the same prediction of z_0 (max abs difference
    <= 1e-5 in fp32), the same loss terms on the same batch, timesteps and draws, and the same
    tokens from v2's solver from the same starting noise. Skips when ../shared/peer is not set up
    (MIRROR=<bare clone> bash ../shared/peer/setup.sh)."""
    import bench_original
    why = bench_original.peer_ready("v2")
    if why:
        pytest.skip(why)
    rec = bench_original.compare("v2", None, train_steps=3, n=8, parts=("tokens", "forward", "losses", "solver"),
                                 work=str(tmp_path))
    assert torch.is_grad_enabled()  # the comparison leaves autograd as it found it
    assert rec["tokens_rows_diff"] == 0
    assert rec["forward_diff"] <= 1e-5
    for k in ("mse", "nll", "loss"):
        assert rec[f"loss_{k}_diff"] <= 1e-5 * max(1.0, rec[f"loss_{k}_mean"]), k
    assert rec["solver_state_diff"] <= 1e-4
    assert rec["solver_token_agreement"] == 1.0 and rec["solver_pipeline_token_agreement"] == 1.0


def test_export_and_import_round_trip(tmp_path):
    """Our weights under the original's names (for the original code to start from) come back
    unchanged through the import's mapping."""
    from diffuseq.importer import convert_state, export_original
    ours = _fake_original_run(tmp_path / "run")
    back = convert_state(export_original(ours), ours.cfg.seq_len, True)
    assert set(back) == set(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(back[k], v), k
