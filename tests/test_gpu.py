"""Tests that need CUDA: `pytest -m gpu` (bench/gpu_check.sh runs them). Skipped without a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]


def _data(tmp_path, n=64):
    import json
    d = tmp_path / "data"
    d.mkdir()
    words = [f"w{i}" for i in range(30)]
    for split in ("train", "valid", "test"):
        with open(d / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"src": " ".join(words[i % 9:i % 9 + 6]),
                                    "trg": " ".join(words[i % 9 + 1:i % 9 + 6])}) + "\n")
    return d


def _args(d, run, *extra):
    return ["--data_dir", str(d), "--checkpoint_path", str(run), "--width", "64", "--layers", "2",
            "--heads", "4", "--ffn", "128", "--hidden_dim", "16", "--seq_len", "32", "--bsz", "16",
            "--learning_steps", "20", "--warmup_steps", "2", "--diffusion_steps", "100",
            "--t_min", "0", "--vocab_size", "100",
            "--eval_interval", "0", "--progress", "false", "--device", "cuda", "--dropout", "0.0",
            "--segment_positions", "true", "--self_cond", "true", "--length_head", "true", *extra]


def _first_step(d, tmp_path, precision):
    from diffuseq.config import parse_train_args
    from diffuseq.trainer import Trainer
    t = Trainer(parse_train_args(_args(d, tmp_path / precision, "--precision", precision)))
    batch = {k: v.cuda() for k, v in t.loader.batch_at(0).items()}
    return t, t.train_step(batch)


def test_bf16_and_fp16_steps_are_finite_and_match_fp32(tmp_path):
    d = _data(tmp_path)
    _, ref = _first_step(d, tmp_path, "fp32")
    for precision in ("bf16", "fp16"):
        t, got = _first_step(d, tmp_path, precision)
        assert all(torch.isfinite(v).all() for v in got.values()), precision
        assert float(got["loss"]) == pytest.approx(float(ref["loss"]), rel=0.05), precision


def test_fused_adamw_is_used(tmp_path):
    from diffuseq.config import parse_train_args
    from diffuseq.trainer import Trainer
    t = Trainer(parse_train_args(_args(_data(tmp_path), tmp_path / "run")))
    assert t.opt.defaults["fused"] is True


def test_compiled_decoder_with_cuda_graphs_matches_eager(tmp_path):
    from diffuseq.config import parse_train_args
    from diffuseq.decoding import load_model
    from diffuseq.trainer import Trainer
    d = _data(tmp_path)
    Trainer(parse_train_args(_args(d, tmp_path / "run"))).train()
    eager = load_model(str(tmp_path / "run"), device="cuda")
    compiled = load_model(str(tmp_path / "run"), device="cuda", compile=True)
    src = [f"w{i} w{i + 1} w{i + 2}" for i in range(16)]
    for sampler, steps in (("dpm", 10), ("ancestral", 20)):
        a = eager.generate(src, sampler=sampler, steps=steps, seed=3)
        b = compiled.generate(src, sampler=sampler, steps=steps, seed=3)
        same = sum(x == y for x, y in zip(a, b)) / len(a)
        assert same >= 0.9, (sampler, list(zip(a, b))[:3])  # kernels may differ in the last bit


def test_torchrun_with_nccl_trains_and_resumes(tmp_path):
    d = _data(tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(ROOT / "train.py")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(cmd + _args(d, run, "--save_interval", "10", "--learning_steps", "10"), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(cmd + ["--resume_checkpoint", str(run), "--learning_steps", "20", "--progress", "false"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "device cuda" in log and "resumed from" in log and (run / "ckpt_0000020").is_dir()
