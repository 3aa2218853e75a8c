"""Decoding from the source, decoding settings chosen on validation (decoding.json), and the
checkpoint chosen by validation loss (best.json)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from diffuseq import checkpoint as ckpt
from diffuseq.decoding import load_model
from diffuseq.pipeline import default_source_t
from diffuseq.diffusion import q_sample
from diffuseq.trainer import Trainer
from diffuseq.checkpoint import CheckpointError
from diffuseq.choice import describe, load_choice, merge
from diffuseq.tuning import choose, save_choice
from toy import tiny_args, toy_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step model saved at steps 2, 4 and 6, each validated, keeping 1 checkpoint."""
    d = toy_data(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_args(d, out, "--learning_steps", "6", "--lr", "3e-3", "--eval_interval", "2",
                      "--save_interval", "2", "--keep_checkpoints", "1", "--learned_mean_embed", "--denoise",
                      "--segment_positions", "true")).train()
    return d, out


def _valid_losses(run_dir):
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "curves.jsonl"))]
    return {r["step"]: r["valid"]["loss"] for r in rows if "valid" in r}


def test_best_checkpoint_is_the_lowest_validation_loss_and_survives_pruning(run):
    _, out = run
    losses = _valid_losses(out)
    assert sorted(losses) == [2, 4, 6]
    best_step = min(losses, key=losses.get)
    best = ckpt.best_checkpoint(str(out))
    assert best["checkpoint"] == ckpt.ckpt_name(best_step)
    assert best["valid_loss"] == pytest.approx(losses[best_step])
    kept = {os.path.basename(p) for p in ckpt.list_checkpoints(str(out))}
    assert kept == {ckpt.ckpt_name(6), ckpt.ckpt_name(best_step)}  # the newest, and the best
    assert ckpt.resolve(str(out), "best").endswith(ckpt.ckpt_name(best_step))
    assert load_model(str(out), "cpu").path.endswith(ckpt.ckpt_name(best_step))  # decoding the best


def test_pruning_keeps_the_best_and_resume_takes_the_latest(tmp_path):
    run = str(tmp_path)
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(run, step, {"model.safetensors": {"w": torch.full((2,), float(step))}}, keep=1)
        if step == 2:
            ckpt.write_best(run, 2, 0.25)
    kept = [os.path.basename(p) for p in ckpt.list_checkpoints(run)]
    assert kept == [ckpt.ckpt_name(2), ckpt.ckpt_name(4)]
    assert ckpt.best_checkpoint(run) == {"checkpoint": ckpt.ckpt_name(2), "valid_loss": 0.25}


def test_best_json_that_names_nothing_falls_back_to_the_latest(tmp_path):
    run = tmp_path / "r"
    (run / "ckpt_0000003").mkdir(parents=True)
    (run / "best.json").write_text('{"checkpoint": "ckpt_0000001", "valid_loss": 0.5}')
    assert ckpt.best_checkpoint(str(run)) is None
    (run / "best.json").write_text("not json")
    assert ckpt.best_checkpoint(str(run)) is None


def test_source_start_lays_x_over_y_then_sep_then_pad(run):
    _, out = run
    m = load_model(str(out), "cpu")
    ids, mask = m.inputs(["w1 w2 w3", "w4"])
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :9] = True  # regions of 9 - 5 = 4 and 9 - 3 = 6 positions
    filled = m.layout.source_start(ids, mask, keep)
    tok = m.tokenizer
    x0 = tok.encode_batch(["w1 w2 w3"])[0]
    x1 = tok.encode_batch(["w4"])[0]
    assert filled[0, :5].tolist() == ids[0, :5].tolist()  # the source itself is untouched
    assert filled[0, 5:9].tolist() == (x0 + [tok.sep_id] + [tok.pad_id] * 9)[:4]
    assert filled[1, 3:9].tolist() == (x1 + [tok.sep_id] + [tok.pad_id] * 9)[:6]
    assert torch.equal(filled[:, 9:], ids[:, 9:])  # past the region: what was there


def test_source_start_noises_the_laid_source_to_t_start(run):
    """The first call of the denoiser sees q(z_t | Emb(source over y), m) at t_start, drawn from
    the batch's seed, and is told t_start (raised to the noise floor, as every call)."""
    _, out = run
    m = load_model(str(out), "cpu")
    ids, mask = m.inputs(["w1 w2 w3 w4", "w5 w6"])
    seen = []
    real = m.net

    def spy(z, t, *rest):
        seen.append((z.clone(), t.clone()))
        return real(z, t, *rest)

    m.net = spy
    t_start = 17
    m.sample_ids(ids, mask, "dpm", 2, seed=4, init="source", t_start=t_start)
    ids_c, mask_c, keep = m.regions.cut(ids, mask, m.regions.margin())
    y0 = m.model.get_embeds(m.layout.source_start(ids_c, mask_c, keep))
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(4))
    want = q_sample(m.sched, y0, torch.full((2,), t_start), noise, mask_c, m.model.mean_embed)
    z, t = seen[0]
    region = (mask_c.bool() & keep).unsqueeze(-1)
    torch.testing.assert_close(torch.where(region, z, 0), torch.where(region, want, 0))
    assert t.tolist() == [t_start, t_start]
    assert len(seen) == 3  # 2 steps + the final prediction


def test_ancestral_from_source_visits_only_timesteps_up_to_t_start(run):
    _, out = run
    m = load_model(str(out), "cpu")
    ids, mask = m.inputs(["w1 w2 w3"])
    seen = []
    real = m.net
    m.net = lambda z, t, *rest: seen.append(int(t[0])) or real(z, t, *rest)
    m.sample_ids(ids, mask, "ancestral", 5, init="source", t_start=30)
    assert seen == [30, 22, 15, 8, 0]  # 5 of 0..30, evenly (7.5 and 22.5 round to even)
    seen.clear()
    m.sample_ids(ids, mask, "ancestral", 5)  # from noise: the whole chain
    assert seen[0] == 49 and seen[-1] == 0 and len(seen) == 5


def test_bad_init_and_t_start_are_refused(run):
    _, out = run
    m = load_model(str(out), "cpu")
    ids, mask = m.inputs(["w1"])
    with pytest.raises(ValueError, match="init"):
        m.sample_ids(ids, mask, "dpm", 2, init="copy")
    with pytest.raises(ValueError, match="t_start 50"):
        m.sample_ids(ids, mask, "dpm", 2, init="source", t_start=50)


def test_merge_given_over_saved_over_defaults():
    saved = {"sampler": "dpm", "steps": 1, "init": "source", "t_start": 50}
    assert merge(saved, {"steps": 3, "t_start": None}) == {"sampler": "dpm", "steps": 3, "init": "source",
                                                           "t_start": 50}
    assert merge(saved, {"steps": None}, sampler="ancestral") == {"sampler": "ancestral"}  # not its choice
    assert merge(None, {"init": "noise"}, "dpm") == {"init": "noise", "sampler": "dpm"}


def test_choose_takes_the_best_score_and_the_faster_of_a_tie():
    rows = [dict(settings={"sampler": "dpm", "steps": 10}, sentence_bleu=20.0, seconds=3.0),
            dict(settings={"sampler": "dpm", "steps": 1}, sentence_bleu=20.0, seconds=1.0),
            dict(settings={"sampler": "ancestral", "steps": 50}, sentence_bleu=19.0, seconds=9.0)]
    c = choose(rows)
    assert c["best"] == {"sampler": "dpm", "steps": 1} and c["ancestral"]["steps"] == 50
    assert describe({"sampler": "dpm", "steps": 1, "init": "source", "t_start": 50}) == "dpm 1, source t=50"


def test_decoding_json_is_checked_when_loaded(tmp_path):
    (tmp_path / "decoding.json").write_text(json.dumps({"best": {"sampler": "dpm", "stepz": 3}}))
    with pytest.raises(CheckpointError, match="decoding.json.*stepz"):
        load_choice(str(tmp_path))
    (tmp_path / "decoding.json").write_text(json.dumps({"best": {"steps": "ten"}}))
    with pytest.raises(CheckpointError, match="steps"):
        load_choice(str(tmp_path))
    (tmp_path / "decoding.json").write_text("{")
    with pytest.raises(CheckpointError, match="decoding.json"):
        load_choice(str(tmp_path))
    rows = [dict(settings={"sampler": "dpm", "steps": 2, "init": "source", "t_start": 5}, sentence_bleu=1.0,
                 seconds=1.0)]
    save_choice(str(tmp_path), rows, "sentence_bleu", "valid", "d", 1)
    assert load_choice(str(tmp_path))["best"]["t_start"] == 5


def _cli(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_tune_writes_the_choice_and_the_decoders_use_it(run, tmp_path):
    d, out = run
    best = ckpt.resolve(str(out), "best")
    r = _cli("tune_decode.py", "--model_dir", str(out), "--max_examples", "12", "--bsz", "8")
    assert r.returncode == 0, r.stderr
    assert "| copy the source |" in r.stdout and "chosen: " in r.stdout
    choice = load_choice(best)
    rows = choice["grid"]
    # the quick grid at T = 50: start times 1, 50, 200, 400, 800, 1200 of 2000 become 1, 1, 5, 10, 20, 30 (14 settings of 16)
    assert len(rows) == 14 and choice["examples"] == 12 and choice["split"] == "valid"
    top = max(r["sentence_bleu"] for r in rows)
    assert max(rows, key=lambda r: (r["sentence_bleu"], -r["seconds"]))["settings"] == choice["best"]
    assert any(r["sentence_bleu"] == top for r in rows if r["settings"] == choice["best"])
    # force a choice, then decode: the solver takes it, a flag overrides it
    choice["dpm"] = {"sampler": "dpm", "steps": 2, "init": "source", "t_start": 9}
    with open(os.path.join(best, "decoding.json"), "w") as f:
        json.dump(choice, f)
    r = _cli("run_decode_solver.py", "--model_dir", str(out), "--out_dir", str(tmp_path), "--progress", "false")
    assert r.returncode == 0, r.stderr
    assert "decoding with dpm 2, source t=9 (saved choice" in r.stdout
    assert "test.seed123.step2.source9.jsonl" in r.stdout
    r = _cli("run_decode_solver.py", "--model_dir", str(out), "--out_dir", str(tmp_path), "--progress", "false",
             "--init", "noise", "--step", "3")
    assert r.returncode == 0 and "decoding with dpm 3, noise" in r.stdout and "step3.jsonl" in r.stdout
    r = _cli("run_decode_solver.py", "--model_dir", str(out), "--out_dir", str(tmp_path), "--progress", "false",
             "--use_saved", "false")
    assert r.returncode == 0 and "decoding with dpm 10, noise\n" in r.stdout
    # a bad decoding.json is a one-line error, not a traceback
    with open(os.path.join(best, "decoding.json"), "w") as f:
        f.write('{"dpm": {"sampler": "dmp"}}')
    r = _cli("run_decode_solver.py", "--model_dir", str(out), "--out_dir", str(tmp_path))
    assert r.returncode == 2 and "decoding.json" in r.stderr and "Traceback" not in r.stderr
    os.remove(os.path.join(best, "decoding.json"))


def test_generate_uses_the_saved_best(run):
    _, out = run
    m = load_model(str(out), "cpu")
    src = ["w1 w2 w3", "w4 w5", "w2"]
    plain = m.generate(src, seed=1)
    assert default_source_t(50) == 10 and default_source_t(2000) == 400
    m.saved = {"best": {"sampler": "dpm", "steps": 1, "init": "source", "t_start": 10}}
    assert m.generate(src, seed=1) == m.generate(src, seed=1, sampler="dpm", steps=1, init="source",
                                                 use_saved=False)
    assert m.generate(src, seed=1, use_saved=False) == plain


def test_length_rules_give_the_regions_they_name(run):
    _, out = run
    m = load_model(str(out), "cpu")
    ids, mask = m.inputs(["w1 w2 w3 w4 w5 w6", "w7"])
    src = (1 - mask).sum(1)  # [CLS] x [SEP]: 8 and 3
    pred = m.regions.predict(ids, mask)
    margin = 2
    assert m.regions.end(ids, mask, margin, "source").tolist() == (2 * src - 2 + 1 + margin).tolist()
    assert m.regions.end(ids, mask, margin, "predicted").tolist() == (src + pred + 1 + margin).tolist()
    assert m.regions.end(ids, mask, margin, "longer").tolist() == (
        src + torch.maximum(pred, src - 2) + 1 + margin).tolist()
    _, _, keep = m.regions.cut(ids, mask, margin, "source")
    assert keep.sum(1).tolist() == (2 * src - 2 + 1 + margin).tolist()
    out_ids = m.sample_ids(ids, mask, "dpm", 2, init="source", t_start=3, lengths="source", length_margin=margin)
    pad = m.tokenizer.pad_id
    # past each region the output is [PAD]
    for row, end in zip(out_ids, (2 * src - 2 + 1 + margin).tolist()):
        assert (row[end:] == pad).all()
    with pytest.raises(ValueError, match="lengths"):
        m.sample_ids(ids, mask, "dpm", 2, lengths="shortest")


def test_training_can_end_by_choosing_its_decoding(run, tmp_path):
    from diffuseq.trainer import main
    d, _ = run
    out = tmp_path / "r"
    args = tiny_args(d, out, "--learning_steps", "2", "--eval_interval", "2", "--save_interval", "2",
                     "--tune_decoding", "true")
    assert main(args) == 0
    choice = load_choice(os.path.join(str(out), ckpt.ckpt_name(2)))
    assert choice is not None and choice["split"] == "valid" and len(choice["grid"]) == 14  # the quick grid at T = 50


def test_tune_without_writing_and_on_another_metric(run, tmp_path):
    _, out = run
    best = ckpt.resolve(str(out), "best")
    if os.path.exists(os.path.join(best, "decoding.json")):
        os.remove(os.path.join(best, "decoding.json"))
    r = _cli("tune_decode.py", "--model_dir", str(out), "--max_examples", "6", "--metric", "rouge_l",
             "--write", "false")
    assert r.returncode == 0, r.stderr
    assert "rouge_l" in r.stdout and "chosen: " in r.stdout and "wrote" not in r.stdout
    assert not os.path.exists(os.path.join(best, "decoding.json"))
    r = _cli("tune_decode.py", "--model_dir", str(out), "--split", "nosuch")
    assert r.returncode == 2 and "nosuch.jsonl" in r.stderr and "Traceback" not in r.stderr
