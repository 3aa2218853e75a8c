"""Checkpoint folders, written atomically.

A run folder (`--checkpoint_path`) holds:

    args.json            every training argument
    tokenizer.json       the tokenizer
    log.txt              the training log
    latest               name of the newest complete checkpoint
    ckpt_0010000/        one folder per saved step:
        model.pt             denoiser weights (with the learned absorbing state m, if any)
        ema.pt               exponential moving average of the weights (used for decoding)
        training_state.pt    optimizer, grad scaler, timestep-sampler history, step, RNG states
        args.json, tokenizer.json   copies, so the folder alone is enough to decode with

Each checkpoint is written into a temporary folder and renamed into place in one step, so a
kill mid-write leaves the previous checkpoint intact and never a half-written one.
"""
import os
import re
import shutil
import uuid

import torch

CKPT_RE = re.compile(r"^ckpt_(\d+)$")
REQUIRED = ("args.json", "tokenizer.json", "model.pt")


class CheckpointError(ValueError):
    pass


def ckpt_name(step):
    return f"ckpt_{step:07d}"


def write_atomic(path, text):
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir, step, files, keep=0):
    """Write `files` ({name: object to torch.save, or str path to copy}) as run_dir/ckpt_<step>.

    Returns the checkpoint folder. With keep > 0 only the newest `keep` checkpoints remain.
    """
    final = os.path.join(run_dir, ckpt_name(step))
    tmp = os.path.join(run_dir, f".tmp_{ckpt_name(step)}_{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        for name, obj in files.items():
            if isinstance(obj, str):
                shutil.copyfile(obj, os.path.join(tmp, name))
            else:
                torch.save(obj, os.path.join(tmp, name))
        if os.path.isdir(final):  # a re-save of the same step replaces the old one
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(os.path.join(run_dir, "latest"), ckpt_name(step) + "\n")
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir):
    """Complete checkpoint folders of a run, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = sorted((int(m.group(1)), n) for n in os.listdir(run_dir) if (m := CKPT_RE.match(n)))
    return [os.path.join(run_dir, n) for _, n in found]


def resolve(path):
    """A checkpoint folder, or a run folder (-> its latest checkpoint). Checks the files."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if not CKPT_RE.match(os.path.basename(os.path.normpath(path))):
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no checkpoint folder (ckpt_NNNNNNN) in this run folder")
        path = found[-1]
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return path


def step_of(path):
    return int(CKPT_RE.match(os.path.basename(os.path.normpath(path))).group(1))


def load(path, name, device="cpu"):
    f = os.path.join(path, name)
    if not os.path.isfile(f):
        raise CheckpointError(f"{path}: missing {name}")
    return torch.load(f, map_location=device, weights_only=False)
