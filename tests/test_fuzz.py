"""Bad input at scale: 1,000 mutated jsonl lines and corrupted checkpoint folders, fed to the
readers of training, decoding and scoring, and to the commands themselves.

Every bad input must end in one error line that names the file (and the line), exit status 2, no
traceback, and no half-written output or run folder. Inputs that are odd but valid (huge lines,
control characters, any script) must train and decode."""
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from diffuseq.checkpoint import CheckpointError
from diffuseq.data.dataset import DataError, read_inputs, read_pairs
from diffuseq.metrics import MetricsError, load_outputs
from diffuseq.tokenizer import TokenizerError

from toy import tiny_args, toy_data

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"src": "thou shalt not steal .", "trg": "you shall not steal ."}
N_LINES = 1000


def mutations(n, seed=0):
    """n bad or odd jsonl lines (bytes, without the newline), drawn from the kinds below."""
    rng = random.Random(seed)
    good = json.dumps(GOOD, ensure_ascii=False).encode()
    values = [None, 3, 2.5, True, [], ["a"], {"a": 1}, "", "   ", "\t\n", "\u3000"]

    def random_bytes():
        return b"#" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))).replace(b"\n", b"")

    def truncated():
        return good[:rng.randrange(1, len(good) - 1)]

    def wrong_type():
        d = dict(GOOD)
        d[rng.choice(["src", "trg"])] = rng.choice(values)
        return json.dumps(d).encode()

    def missing_key():
        return json.dumps({k: v for k, v in GOOD.items() if k != rng.choice(["src", "trg"])}).encode()

    def not_an_object():
        return json.dumps(rng.choice([[GOOD["src"], GOOD["trg"]], GOOD["src"], 7, None])).encode()

    def huge():
        word = rng.choice(["verily ", "\u05d0\u05de\u05df ", "\U0001F600 ", "a" * 5000])
        d = dict(GOOD)
        d[rng.choice(["src", "trg"])] = word * rng.randrange(3, max(4, 30_000 // len(word)))
        return json.dumps(d, ensure_ascii=rng.random() < 0.5).encode()

    def bad_utf8():
        at = rng.randrange(len(good))
        return good[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"]) + good[at:]

    def surrogate():
        return ('{"src": "thou \\ud800 shalt", "trg": "%s"}' % GOOD["trg"]).encode()

    def deep():
        k = rng.randrange(1000, 100000)
        return b"[" * k + b"]" * k

    def control_chars():
        d = dict(GOOD)
        d["src"] = "".join(rng.choice(["\x00", "\x07", "\u200b", "\ufeff", "a", " "]) for _ in range(20)) + "x"
        return json.dumps(d).encode()

    def extra_keys():
        return json.dumps({**GOOD, "id": rng.randrange(100), "src2": None}).encode()

    kinds = [random_bytes, truncated, wrong_type, missing_key, not_an_object, huge, bad_utf8, surrogate, deep,
             control_chars, extra_keys]
    return [(kind.__name__, kind()) for kind in (kinds[i % len(kinds)] for i in range(n))]


def write_lines(path, lines):
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


def one_line_error(r, *names):
    """The command failed as it should: status 2, one line on stderr naming each of `names`, no
    traceback."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-2000:])
    assert "Traceback" not in r.stderr, err[-2000:]
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err[-2000:]
    for name in names:
        assert name in err, (name, err)


def run_main(capsys, main, argv):
    """A command's main() in this process: (status, stderr); an exception escaping it fails the
    test (it would be a traceback)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def train_main(argv):
    from diffuseq.config import parse_train_args
    from diffuseq.trainer import main
    return main(parse_train_args(argv))


def decode_main(argv):
    from diffuseq.decode_cli import main
    return main(argv, solver=True)


def eval_main(argv):
    from diffuseq.evaluate import main
    return main(argv)


def run(script, *argv, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_readers_take_1000_mutated_lines_or_name_file_and_line(tmp_path):
    """Each mutated line, between two good ones, is either read (training pairs, decoding inputs,
    scoring outputs) or refused with "path:2: problem"; nothing else is raised."""
    good = json.dumps(GOOD).encode()
    out_good = json.dumps({"source": "a", "reference": "b", "recover": "c"}).encode()
    refused = accepted = 0
    for i, (kind, line) in enumerate(mutations(N_LINES)):
        path = write_lines(tmp_path / f"m{i % 7}.jsonl", [good, line, good])
        for read, err in ((lambda p: list(read_pairs(str(p))), DataError),
                          (lambda p: read_inputs(str(p)), DataError)):
            try:
                rows = read(path)
            except err as e:
                assert str(e).startswith(f"{path}:2: "), (kind, str(e)[:300])
                assert "\n" not in str(e)
                refused += 1
            else:
                assert len(rows) == 3, kind
                accepted += 1
        # as a line of decoding outputs (the scorer's reader)
        out_line = line.replace(b'"src"', b'"source"').replace(b'"trg"', b'"reference"')
        path = write_lines(tmp_path / "out.jsonl", [out_good, out_line, out_good])
        try:
            load_outputs(path)
        except MetricsError as e:
            assert str(e).startswith(f"{path}:2: "), (kind, str(e)[:300])
        else:
            raise AssertionError(f"{kind}: an output line without \"recover\" was accepted")
    assert refused > N_LINES and accepted > 100  # both outcomes happen, over both readers


def test_odd_but_valid_lines_train_and_decode(tmp_path):
    """Every mutated line that the reader accepts (huge lines, control characters, extra keys)
    trains for a step and decodes: the reader lets through only what the rest can take."""
    from diffuseq.decoding import load_model
    from diffuseq.trainer import Trainer
    d = toy_data(tmp_path / "data")
    kept = []
    for kind, line in mutations(300, seed=1):
        path = write_lines(tmp_path / "one.jsonl", [line])
        try:
            list(read_pairs(str(path)))
        except DataError:
            continue
        kept.append(line)
    assert len(kept) > 50
    good = (d / "train.jsonl").read_bytes().splitlines()
    write_lines(d / "train.jsonl", good + kept)
    write_lines(d / "test.jsonl", kept[:40])
    run_dir = tmp_path / "run"
    Trainer(tiny_args(d, run_dir, "--learning_steps", "2", "--eval_interval", "0", "--bsz", "16")).train()
    m = load_model(str(run_dir), device="cpu")
    out = m.generate([json.loads(x)["src"] for x in kept[:40]], steps=2, bsz=16)
    assert len(out) == 40 and all(isinstance(x, str) for x in out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run and its data, shared by the command-line cases below."""
    from diffuseq.trainer import Trainer
    tmp = tmp_path_factory.mktemp("fuzz")
    d = toy_data(tmp / "data")
    run_dir = tmp / "run"
    Trainer(tiny_args(d, run_dir, "--learning_steps", "2", "--eval_interval", "0")).train()
    return d, run_dir


@pytest.mark.parametrize("kind", ["random_bytes", "truncated", "wrong_type", "bad_utf8", "surrogate", "deep"])
def test_train_refuses_a_bad_line_and_leaves_no_run_folder(tmp_path, kind, capsys):
    """In this process for each kind of damage, and once through the real command."""
    line = next(line for k, line in mutations(50) if k == kind)
    d = toy_data(tmp_path / "data")
    lines = (d / "train.jsonl").read_bytes().splitlines()
    write_lines(d / "train.jsonl", lines[:4] + [line] + lines[4:])
    run_dir = tmp_path / "run"
    one_line_error(run_main(capsys, train_main, tiny_args_argv(d, run_dir)), str(d / "train.jsonl") + ":5:")
    assert not run_dir.exists()
    if kind == "bad_utf8":
        one_line_error(run("train.py", *tiny_args_argv(d, run_dir)), str(d / "train.jsonl") + ":5:")
        assert not run_dir.exists()


def tiny_args_argv(d, run_dir):
    return ["--data_dir", d, "--checkpoint_path", run_dir, "--width", "32", "--layers", "1", "--heads", "2",
            "--ffn", "64", "--hidden_dim", "16", "--seq_len", "24", "--bsz", "8", "--warmup_steps", "1",
            "--diffusion_steps", "50", "--t_min", "0", "--vocab_size", "100", "--progress", "false",
            "--learning_steps", "2", "--eval_interval", "0"]


@pytest.mark.parametrize("kind", ["truncated", "missing_key", "bad_utf8", "not_an_object"])
def test_decoders_refuse_a_bad_input_line_and_write_nothing(trained, tmp_path, kind, capsys):
    d, run_dir = trained
    line = next(line for k, line in mutations(50) if k == kind)
    if kind == "missing_key":  # a decoding input needs "src" only
        line = json.dumps({"trg": "x"}).encode()
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD).encode(), line])
    out = tmp_path / "out"
    argv = ["--model_dir", run_dir, "--input", bad, "--out_dir", out, "--progress", "false"]
    one_line_error(run_main(capsys, decode_main, argv), f"{bad}:2:")
    assert not out.exists()
    if kind == "truncated":
        one_line_error(run("run_decode_solver.py", *argv), f"{bad}:2:")
        assert not out.exists()


def test_decoding_from_stdin_refuses_invalid_utf8(trained):
    _, run_dir = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "run_decode_solver.py"), "--model_dir", str(run_dir), "--input",
                        "-"], input=b"fine line\n\xff\xfe broken\n", capture_output=True, env=env, timeout=300)
    r.stderr, r.stdout = r.stderr.decode(), r.stdout.decode()
    one_line_error(r, "<stdin>:2:")
    assert r.stdout == ""


@pytest.mark.parametrize("kind", ["truncated", "wrong_type", "bad_utf8", "deep"])
def test_evaluator_refuses_a_bad_output_line(tmp_path, kind, capsys):
    line = next(line for k, line in mutations(50) if k == kind)
    row = json.dumps({"source": "a", "reference": "b", "recover": "c"}).encode()
    path = write_lines(tmp_path / "out.jsonl", [row, line.replace(b'"src"', b'"source"')])
    argv = [path, "--json", tmp_path / "scores.json"]
    one_line_error(run_main(capsys, eval_main, argv), f"{path}:2:")
    assert not (tmp_path / "scores.json").exists()
    if kind == "deep":
        one_line_error(run("scripts/eval_seq2seq.py", *argv), f"{path}:2:")


# ---------------------------------------------------------------------------- checkpoints

def corrupt(ckpt, how, other=None):
    """Damage one checkpoint folder in place."""
    weights = ckpt / "ema.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncated":
        weights.write_bytes(bytes(data[:len(data) // 2]))
    elif how == "header_bitflip":  # the 8-byte header length, then the JSON header
        n = struct.unpack("<Q", bytes(data[:8]))[0]
        data[8 + n // 2] ^= 0x5A
        weights.write_bytes(bytes(data))
    elif how == "length_bitflip":
        data[5] ^= 0x01
        weights.write_bytes(bytes(data))
    elif how == "missing_keys":
        from safetensors.torch import load_file, save_file
        t = load_file(str(weights))
        save_file({k: v for i, (k, v) in enumerate(t.items()) if i % 2}, str(weights))
    elif how == "wrong_shapes":
        from safetensors.torch import load_file, save_file
        t = load_file(str(weights))
        save_file({k: v[..., :1].contiguous() if v.ndim else v for k, v in t.items()}, str(weights))
    elif how == "config_mismatch":
        a = json.loads((ckpt / "args.json").read_text())
        a["width"], a["hidden_dim"] = 64, 8
        (ckpt / "args.json").write_text(json.dumps(a))
    elif how == "args_not_json":
        (ckpt / "args.json").write_text('{"seq_len": 24,')
    elif how == "other_tokenizer":
        (ckpt / "tokenizer.json").write_bytes((other / "tokenizer.json").read_bytes())
    elif how == "tokenizer_garbage":
        (ckpt / "tokenizer.json").write_bytes(b"\x00\x01 not a tokenizer")


CASES = ["truncated", "header_bitflip", "length_bitflip", "missing_keys", "wrong_shapes", "config_mismatch",
         "args_not_json", "other_tokenizer", "tokenizer_garbage"]


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """A run with another vocabulary: its tokenizer.json belongs to another model."""
    from diffuseq.trainer import Trainer
    from toy import write_pairs
    tmp = tmp_path_factory.mktemp("other")
    d = tmp / "data"
    d.mkdir()
    pairs = [(f"alpha{i} beta{i % 3} gamma", f"delta{i} beta{i % 3}") for i in range(60)]
    for split in ("train", "valid"):
        write_pairs(d / f"{split}.jsonl", pairs)
    Trainer(tiny_args(d, tmp / "run", "--learning_steps", "1", "--eval_interval", "0", "--vocab_size", "300")).train()
    return Path(tmp / "run" / "ckpt_0000001")


@pytest.mark.parametrize("how", CASES)
def test_a_corrupted_checkpoint_is_one_clear_error(trained, other_run, tmp_path, how, capsys):
    """Loading refuses each damage with an error naming the file; the decoder exits 2 with one
    line and writes nothing."""
    import shutil

    from diffuseq.decoding import load_model
    _, run_dir = trained
    ckpt = tmp_path / "ckpt_0000002"
    shutil.copytree(run_dir / "ckpt_0000002", ckpt)
    corrupt(ckpt, how, other_run)
    with pytest.raises((CheckpointError, TokenizerError, ValueError)) as e:
        load_model(str(ckpt), device="cpu")
    assert str(ckpt) in str(e.value), str(e.value)
    out = tmp_path / "out"
    verses = tmp_path / "verses.txt"
    verses.write_text("Thou shalt not steal.\nHonour thy father and thy mother.\n")
    argv = ["--model_dir", ckpt, "--input", verses, "--out_dir", out, "--progress", "false"]
    one_line_error(run_main(capsys, decode_main, argv), str(ckpt))
    if how == "truncated":
        one_line_error(run("run_decode_solver.py", *argv), str(ckpt))
    assert not out.exists()
