"""The package installs the ecosystem's way (pyproject.toml) and its console scripts run."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("diffuseq-train", "diffuseq-decode", "diffuseq-decode-solver", "diffuseq-tune", "diffuseq-eval",
           "diffuseq-data", "diffuseq-checkpoint")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / "diffuseq", src / "diffuseq", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return target


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_scripts_run(installed, script, tmp_path):
    exe = installed / "bin" / script
    assert exe.is_file()
    # run from elsewhere, with only the installed copy importable
    r = subprocess.run([sys.executable, str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {script}")
    assert str(installed) in subprocess.run(
        [sys.executable, "-c", "import diffuseq; print(diffuseq.__file__)"], capture_output=True, text=True,
        cwd=tmp_path, env={"PYTHONPATH": str(installed)}).stdout
