"""Checkpoint folders, written atomically, loaded without unpickling anything.

A run folder (`--checkpoint_path`) holds:

    args.json            every training argument
    tokenizer.json       the tokenizer
    log.txt              the training log
    loss.png             training curves (when matplotlib is installed)
    latest               name of the newest complete checkpoint
    best.json            the checkpoint with the lowest validation loss so far, and that loss
    ckpt_0010000/        one folder per saved step:
        model.safetensors        denoiser weights (with the learned absorbing state m, if any)
        ema.safetensors          exponential moving average of the weights (used for decoding)
        training_state.json      step, RNG states, sampler history, optimizer hyper-parameters ...
        training_state.safetensors   ... and every tensor of that state (AdamW moments, RNG bytes)
        args.json, tokenizer.json    copies, so the folder alone is enough to decode with

Nothing here goes through pickle: safetensors holds raw tensors, JSON holds the rest, so loading
a checkpoint from an untrusted source cannot run code. Folders written by older versions hold
`model.pt`, `ema.pt` and `training_state.pt`; those are still read, with torch's restricted
`weights_only` unpickler (tensors, numbers, containers and numpy's array types only), and
`python -m diffuseq.checkpoint convert FOLDER` rewrites them in the new format.

Each checkpoint is written into a temporary folder and renamed into place in one step, so a
kill mid-write leaves the previous checkpoint intact and never a half-written one.
"""
import argparse
import json
import os
import pickle
import re
import shutil
import sys
import uuid

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CKPT_RE = re.compile(r"^ckpt_(\d+)$")
REQUIRED = ("args.json", "tokenizer.json", "model.safetensors")  # or model.pt, from older versions
WEIGHTS = ("model", "ema")  # each as <name>.safetensors, or <name>.pt from older versions


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


# -----------------------------------------------------------------------------
# nested state <-> (JSON, flat tensors)

def flatten_state(obj):
    """A nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) -> a
    JSON-able tree and a flat {key: tensor} dict. Tensors and arrays become {"$tensor": key}
    (arrays also keep their numpy dtype), tuples {"$tuple": [...]}, dicts whose keys are not
    all strings {"$items": [[k, v], ...]}."""
    tensors = {}

    def enc(x, path):
        if isinstance(x, torch.Tensor):
            key = path or "root"
            tensors[key] = x.detach().to("cpu").clone().contiguous()
            return {"$tensor": key}
        if isinstance(x, np.ndarray):
            key = path or "root"
            t = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64) if x.dtype == np.uint32
                                 else np.ascontiguousarray(x).copy())
            tensors[key] = t
            return {"$tensor": key, "numpy": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, (bool, int, float, str)) or x is None:
            return x
        if isinstance(x, tuple):
            return {"$tuple": [enc(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in x):
                return {k: enc(v, f"{path}/{k}") for k, v in x.items()}
            return {"$items": [[enc(k, f"{path}/key{i}"), enc(v, f"{path}/{k}")]
                               for i, (k, v) in enumerate(x.items())]}
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint (at {path or 'the root'})")

    return enc(obj, ""), tensors


def unflatten_state(tree, tensors):
    """Inverse of flatten_state."""

    def dec(x):
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "$tensor" in x:
            t = tensors[x["$tensor"]]
            return t.numpy().astype(x["numpy"]) if "numpy" in x else t
        if "$tuple" in x:
            return tuple(dec(v) for v in x["$tuple"])
        if "$items" in x:
            return {_hashable(dec(k)): dec(v) for k, v in x["$items"]}
        return {k: dec(v) for k, v in x.items()}

    return dec(tree)


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


# -----------------------------------------------------------------------------
# writing

def _write(folder, name, obj):
    """One entry of a checkpoint: a str is a file to copy; `<x>.safetensors` a flat state dict;
    `<x>.state` a nested state (written as <x>.json + <x>.safetensors)."""
    if isinstance(obj, str):
        shutil.copyfile(obj, os.path.join(folder, name))
    elif name.endswith(".safetensors"):
        save_file({k: v.detach().to("cpu").contiguous() for k, v in obj.items()},
                  os.path.join(folder, name))
    elif name.endswith(".state"):
        stem = os.path.join(folder, name[: -len(".state")])
        tree, tensors = flatten_state(obj)
        save_file(tensors, stem + ".safetensors")
        with open(stem + ".json", "w") as f:
            json.dump(tree, f)
    else:
        raise ValueError(f"unknown checkpoint entry {name}")


def save_checkpoint(run_dir, step, files, keep=0, valid_loss=None):
    """Write `files` as run_dir/ckpt_<step>: {"model.safetensors": state dict,
    "training_state.state": nested state, "args.json": path of a file to copy, ...}.

    valid_loss: this step's validation loss, if measured; below the recorded best, this checkpoint
    becomes the best (best.json). Returns the checkpoint folder. With keep > 0 only the newest
    `keep` checkpoints remain, and the best one besides.
    """
    final = os.path.join(run_dir, ckpt_name(step))
    tmp = os.path.join(run_dir, f".tmp_{ckpt_name(step)}_{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        for name, obj in files.items():
            _write(tmp, name, obj)
        if os.path.isdir(final):  # a re-save of the same step replaces the old one
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(os.path.join(run_dir, "latest"), ckpt_name(step) + "\n")
    best = best_checkpoint(run_dir)
    if valid_loss is not None and (best is None or valid_loss < best["valid_loss"]):
        best = write_best(run_dir, step, valid_loss)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            if best is None or os.path.basename(old) != best["checkpoint"]:
                shutil.rmtree(old, ignore_errors=True)
    return final


BEST = "best.json"


def write_best(run_dir, step, valid_loss):
    """Record ckpt_<step> as the run's best checkpoint by validation loss; returns the record."""
    best = {"checkpoint": ckpt_name(step), "valid_loss": valid_loss}
    write_atomic(os.path.join(run_dir, BEST), json.dumps(best) + "\n")
    return best


def best_checkpoint(run_dir):
    """{"checkpoint": name, "valid_loss": x} of a run folder, or None when none is recorded (or
    the file is unreadable, or names no folder that exists)."""
    try:
        with open(os.path.join(run_dir, BEST)) as f:
            best = json.load(f)
        name = best["checkpoint"]
        float(best["valid_loss"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not CKPT_RE.match(name) or not os.path.isdir(os.path.join(run_dir, name)):
        return None
    return best


# -----------------------------------------------------------------------------
# finding and reading

def list_checkpoints(run_dir):
    """Complete checkpoint folders of a run, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = sorted((int(m.group(1)), n) for n in os.listdir(run_dir) if (m := CKPT_RE.match(n)))
    return [os.path.join(run_dir, n) for _, n in found]


def has(path, name):
    """Whether the checkpoint folder holds `name` ("model", "ema", "training_state") in either
    format."""
    exts = (".json",) if name == "training_state" else (".safetensors",)
    return any(os.path.isfile(os.path.join(path, name + e)) for e in exts + (".pt",))


def resolve(path, which="latest"):
    """A checkpoint folder, or a run folder (-> its latest checkpoint, or with which="best" the
    one best.json names, where there is one). Checks the files."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if not CKPT_RE.match(os.path.basename(os.path.normpath(path))):
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no checkpoint folder (ckpt_NNNNNNN) in this run folder")
        best = best_checkpoint(path) if which == "best" else None
        path = os.path.join(path, best["checkpoint"]) if best else found[-1]
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(path, f))
               and not (f == "model.safetensors" and has(path, "model"))]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return path


def step_of(path):
    return int(CKPT_RE.match(os.path.basename(os.path.normpath(path))).group(1))


# numpy's array types, which older training states hold (the numpy RNG state, sampler history):
# data only, so they may pass the restricted unpickler
_NUMPY_SAFE = [np.ndarray, np.dtype, np.dtypes.UInt32DType, np.dtypes.Int64DType,
               np.dtypes.Float64DType, np.dtypes.Float32DType]
try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
_NUMPY_SAFE.append(_reconstruct)


def load_legacy(f, device="cpu"):
    """An older `.pt` file through torch's restricted unpickler: tensors and plain data load, and
    anything that names other code is refused with a CheckpointError."""
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            return torch.load(f, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{f}: refused to load: this file asks to run Python code while it is read, which a "
            f"checkpoint never needs ({first}). Only tensors and plain data are loaded; if you "
            "trust where it came from and it really is an older DiffuSeq checkpoint, see the "
            "docs/training.md, 'Older checkpoints'") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{f}: not a readable checkpoint file ({e})") from None


def load(path, name, device="cpu"):
    """Read `name` ("model", "ema" or "training_state") from a checkpoint folder: the
    safetensors (+ JSON) files, or an older `.pt` through the restricted unpickler."""
    base = os.path.join(path, name)
    try:
        if name == "training_state" and os.path.isfile(base + ".json"):
            with open(base + ".json") as fh:
                tree = json.load(fh)
            tensors = load_file(base + ".safetensors", device="cpu")
            return unflatten_state(tree, tensors)
        if name != "training_state" and os.path.isfile(base + ".safetensors"):
            return load_file(base + ".safetensors", device=str(device))
    except (SafetensorError, json.JSONDecodeError, KeyError, OSError) as e:
        raise CheckpointError(f"{base}: damaged checkpoint file ({e})") from None
    if os.path.isfile(base + ".pt"):
        return load_legacy(base + ".pt", device)
    raise CheckpointError(f"{path}: missing {name}.safetensors")


def load_into(module, state, where):
    """module.load_state_dict(state), with a mismatch (a missing or unexpected tensor, a wrong
    shape: weights of another model or configuration) as one CheckpointError naming `where`."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: not a table of tensors")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if extra:
        problems.append(f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
    if shapes:
        k = shapes[0]
        problems.append(f"{k} has shape {tuple(state[k].shape)}, the configuration needs {tuple(own[k].shape)}")
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the saved configuration ({'; '.join(problems)})")
    module.load_state_dict(state)


def convert(path):
    """Rewrite an older checkpoint folder's .pt files as safetensors + JSON (the .pt files are
    removed once the new ones are written). Returns the names written."""
    written = []
    for name in WEIGHTS + ("training_state",):
        old = os.path.join(path, name + ".pt")
        if not os.path.isfile(old):
            continue
        obj = load_legacy(old)
        _write(path, name + (".state" if name == "training_state" else ".safetensors"), obj)
        os.remove(old)
        written.append(name)
    return written


if __name__ == "__main__":  # python -m diffuseq.checkpoint: its command line is checkpoint_cli's
    import runpy
    runpy.run_module("diffuseq.checkpoint_cli", run_name="__main__", alter_sys=True)
