"""Every command of docs/reproduce.md, run as written at toy size: the page's path variables point
at toy data, a toy BERT vocabulary and a made-up run of the original code, training lines get a
tiny shape and two steps appended, decoding lines a few inputs. The multi-process lines run with
torchrun on CPU (gloo), with the recipes' batches cut to 16, except the line of original-v2 on 8
processes: it trains the recipe's own global batch of 850 (microbatch 425), 107 or 106 examples
per process. Two nodes without a shared filesystem: tests/test_multinode.py."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffuseq.logs import read_curves
from test_original import _fake_original_run
from toy import toy_data

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reproduce.md"
TOY_TRAIN = ("--learning_steps 2 --save_interval 2 --eval_interval 0 --log_interval 1 --width 32 --layers 1 "
             "--heads 2 --ffn 64 --hidden_dim 16 --seq_len 32 --diffusion_steps 20 --progress false")
TOY_BATCH = "--bsz 16 --microbatch 16"  # all but the line that trains a recipe's own batch
OWN_BATCH = "NPROC=8 bash scripts/train.sh --recipe original-v2"
TOY_DECODE = "--max_examples 3 --progress false"


def page_commands():
    """The lines of the page's bash blocks (no comments), in order."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].rstrip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_page_commands_are_what_the_test_runs():
    lines = page_commands()
    assert sum("train" in ln and "--recipe original-v1" in ln for ln in lines) == 3
    assert sum("train" in ln and "--recipe original-v2" in ln for ln in lines) == 4
    assert sum(ln.startswith(OWN_BATCH) for ln in lines) == 1
    assert sum("import-original" in ln for ln in lines) == 1
    assert any("--sampler original-v1" in ln for ln in lines) and any("--sampler original-v2" in ln for ln in lines)


def test_every_command_of_the_page_runs_at_toy_size(tmp_path):
    data = toy_data(tmp_path / "QQP")
    bert = tmp_path / "bert"
    bert.mkdir()
    words = sorted({w for line in (data / "train.jsonl").read_text().split('"') for w in line.split()
                    if re.fullmatch(r"w\d+", w)})
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    values = {"DATA": data, "BERT": bert, "RUN1": tmp_path / "runs" / "qqp-original-v1",
              "RUN2": tmp_path / "runs" / "qqp-original-v2", "OUT": tmp_path / "out",
              "ORIGINAL": tmp_path / "original_run", "IMPORTED": tmp_path / "runs" / "imported"}
    _fake_original_run(values["ORIGINAL"])
    script = ["set -euo pipefail"]
    for line in page_commands():
        m = re.match(r"^(\w+)=", line)
        if m and m.group(1) in values:
            script.append(f"{m.group(1)}={values[m.group(1)]}")
            continue
        if "--recipe" in line:  # a training line: a fresh run folder, a toy shape
            run = re.search(r"--checkpoint_path (\$\w+)", line).group(1)
            toy = TOY_TRAIN if line.startswith(OWN_BATCH) else f"{TOY_TRAIN} {TOY_BATCH}"
            script += [f'rm -rf "{run}"', f"{line} {toy}"]
        elif "run_decode" in line:
            script.append(f"{line} {TOY_DECODE}")
        elif "import-original" in line:
            # the original's run folder and the output, where the page names them without a variable
            line = re.sub(r"(import-original )(?!\$)\S+", rf"\g<1>{values['ORIGINAL']}", line)
            script.append(re.sub(r"(--out )(?!\$)\S+", rf"\g<1>{values['IMPORTED']}", line))
        else:
            script.append(line)
    # `python` on the page is this interpreter: its own folder first on PATH (a link to it elsewhere
    # would miss a virtual environment's pyvenv.cfg), and PYTHON for the scripts
    bindir = os.path.dirname(sys.executable)
    if shutil.which("python", path=bindir) is None:  # a python3 without a `python` beside it
        script.insert(1, 'python() { "$PYTHON" "$@"; }')
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for run, procs in (("RUN1", "8"), ("RUN2", "8")):
        log = (values[run] / "log.txt").read_text()
        assert f"{procs} process(es)" in log, log[-1000:]
        assert (values[run] / "ckpt_0000002").is_dir()
    saved = json.loads((values["RUN2"] / "args.json").read_text())
    assert (saved["bsz"], saved["microbatch"]) == (850, 425)  # the recipe's own, over 8 processes
    # and trained: each step's 850 pairs have more than 850 target tokens
    assert all(r["tokens_per_s"] / r["steps_per_s"] > 850 for r in read_curves(str(values["RUN2"])) if "train" in r)
    assert (values["IMPORTED"] / "ckpt_0000005" / "model.safetensors").is_file()
    outs = sorted(values["OUT"].glob("*/*.jsonl"))
    assert len([p for p in outs if "qqp-original-v1" in str(p)]) == 10  # 10 samples for MBR
    assert len([p for p in outs if "qqp-original-v2" in str(p)]) == 1
    assert r.stdout.count("sentence_bleu") >= 2 or r.stdout.count("BLEU") >= 2, r.stdout[-2000:]
