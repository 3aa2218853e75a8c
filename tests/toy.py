"""The made-up data and the tiny model shape that the decoding tests train on."""
import json

from diffuseq.config import parse_train_args


def write_pairs(path, pairs):
    with open(path, "w") as f:
        for s, t in pairs:
            f.write(json.dumps({"src": s, "trg": t}) + "\n")


def toy_data(folder, test_size=None):
    """40 pairs of made-up words, written as train, valid and test (its first test_size)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(20)]
    pairs = [(" ".join(words[i % 7:i % 7 + 5]), " ".join(words[i % 5:i % 5 + 4])) for i in range(40)]
    for split in ("train", "valid", "test"):
        write_pairs(folder / f"{split}.jsonl", pairs[:test_size] if split == "test" else pairs)
    return folder


def tiny_args(data, run, *extra):
    """Training arguments of a 1-layer, 32-wide model over 50 timesteps, and `extra`."""
    return parse_train_args([
        "--data_dir", str(data), "--checkpoint_path", str(run), "--width", "32", "--layers", "1",
        "--heads", "2", "--ffn", "64", "--hidden_dim", "16", "--seq_len", "24", "--bsz", "8",
        "--warmup_steps", "1", "--diffusion_steps", "50", "--t_min", "0", "--vocab_size", "100", "--progress", "false",
        *extra])


def fake_checkpoint(folder, files=None):
    """A checkpoint folder holding `files` (default: every required one) with dummy contents."""
    from diffuseq import checkpoint as ckpt
    folder.mkdir(parents=True)
    for f in ckpt.REQUIRED if files is None else files:
        (folder / f).write_text("x")
    return folder
