"""bench/gpu_check.sh --cpu-smoke runs every part of the GPU check in a tiny size on CPU, so the
script cannot rot between GPU runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    pytest.importorskip("pythonbible")
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), "--cpu-smoke"],
                       capture_output=True, text=True, timeout=1500, cwd=tmp_path,
                       env={**os.environ, "PYTHON": sys.executable})  # this interpreter, venv or not
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parts = [json.loads(line) for line in (out / "parts.jsonl").read_text().splitlines()]
    names = [p["part"] for p in parts]
    assert names == ["env", "quality_big_train", "quality_big_tune", "quality_big_chosen", "quality_big_paper",
                     "train_presets", "decode_tiny_eager", "train_big_batch", "quality_train",
                     "quality_tune", "quality_decode", "quality_score", "gpu_tests", "decode_tiny_compiled",
                     "train_compiled"]
    failed = {p["part"]: (out / f"{p['part']}.log").read_text()[-2000:] for p in parts if p["status"] != "ok"}
    assert not failed, failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"]["matmul_tflops"] > 0
    assert {x["run"] for x in summary["train"]} == {"train_presets", "train_big_batch", "train_compiled"}
    assert {x["sampler"] for x in summary["decode"]} == {"dpm", "ancestral"}
    assert set(summary["quality"]) >= {"model", "copy source"}
    assert set(summary["quality_big_chosen"]) >= {"model", "copy source"}
    assert set(summary["quality_big_paper"]) >= {"model", "copy source"}
    assert (out / "profile_train_tiny.txt").read_text().startswith("3 steps, wall")
    md = (out / "summary.md").read_text()
    assert "## Training step" in md and "## Decoding" in md and "## Quality" in md
