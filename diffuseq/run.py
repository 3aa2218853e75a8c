"""The run folder: its arguments and tokenizer, its checkpoints (everything an exact resume
needs), and resuming from one. A command that fails while setting up a new run leaves no folder
behind."""
import contextlib
import logging
import os
import random
import shutil

import numpy as np
import torch

from . import checkpoint as ckpt
from . import dist
from .config import load_args, save_args
from .logs import close_logging, setup_logging
from .plots import plot_curves
from .tokenizer import Tokenizer, build_tokenizer

log = logging.getLogger("diffuseq")

# arguments that may be changed when a run is resumed (without a warning); any argument not given
# again comes from the checkpoint
RESUMABLE = {"learning_steps", "max_minutes", "save_interval", "log_interval", "eval_interval", "eval_batches",
             "keep_checkpoints", "device", "wandb", "progress", "resume_checkpoint", "compile", "pack",
             "explicit", "checkpoint_path", "tune_decoding"}


def resume_args(args):
    """The checkpoint's saved arguments, overridden by those given explicitly now (defaults do
    not count: a bare --resume_checkpoint continues with the run's own learning_steps and
    intervals). Returns (args, checkpoint folder)."""
    path = ckpt.resolve(args.resume_checkpoint)
    saved = load_args(os.path.join(path, "args.json"))
    given = {k: getattr(args, k) for k in args.explicit}
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE and getattr(saved, k) != v)
    if changed:
        log.warning("resuming with changed arguments: %s", ", ".join(changed))
    merged = saved.replace(**{**given, "resume_checkpoint": args.resume_checkpoint, "explicit": args.explicit})
    if "checkpoint_path" not in args.explicit:
        merged = merged.replace(checkpoint_path=os.path.dirname(os.path.normpath(path)))
    return merged, path


@contextlib.contextmanager
def new_run(args):
    """Around setting up a run: if it fails, a run folder this command created is removed again
    (by rank 0, and only while it holds no checkpoint)."""
    run = args.checkpoint_path
    created = bool(run) and not args.resume_checkpoint and not os.path.exists(run)
    try:
        yield
    except BaseException:
        if created and int(os.environ.get("RANK", "0")) == 0 and not ckpt.list_checkpoints(run):
            close_logging()
            shutil.rmtree(run, ignore_errors=True)
        raise


def prepare(args, proc, resume_dir):
    """Create the run folder, start its log, write args.json, and return the tokenizer: a resumed
    run's, or one built once by rank 0 and read by the others."""
    if proc.is_main:
        os.makedirs(args.checkpoint_path, exist_ok=True)
    dist.barrier()
    setup_logging(args.checkpoint_path, proc.is_main)
    path = os.path.join(args.checkpoint_path, "tokenizer.json")
    if resume_dir:
        tok = Tokenizer.load(os.path.join(resume_dir, "tokenizer.json"))
    else:
        if proc.is_main:
            build_tokenizer(args.vocab, args.data_dir, args.vocab_size, args.vocab_path, args.tokenizer_algo,
                            skip_bad_lines=args.skip_bad_lines, lowercase=args.lowercase).save(path)
        dist.barrier()
        tok = Tokenizer.load(path)
    if proc.is_main:
        save_args(args, os.path.join(args.checkpoint_path, "args.json"))
    return tok


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run, step, model, ema, opt, scaler, sampler, keep=0, valid_loss=None):
    """Write checkpoint `step` of the run (weights, EMA, optimizer, grad scaler, timestep-sampler
    history, random states, arguments, tokenizer), redraw loss.png; returns its folder."""
    state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "sampler": sampler.state_dict(),
             "step": step, "rng": rng_state()}
    path = ckpt.save_checkpoint(run, step, {
        "model.safetensors": model.state_dict(), "ema.safetensors": ema.state_dict(model),
        "training_state.state": state, "args.json": os.path.join(run, "args.json"),
        "tokenizer.json": os.path.join(run, "tokenizer.json")}, keep=keep, valid_loss=valid_loss)
    best = ckpt.best_checkpoint(run)
    log.info("saved %s%s", path, " (the best so far by validation loss)"
             if best and best["checkpoint"] == os.path.basename(path) else "")
    try:
        plot_curves(run)
    except Exception as e:  # a picture is never worth losing a run
        log.warning("could not draw loss.png: %s", e)
    return path


def restore(path, model, ema, opt, scaler, sampler, device):
    """Load checkpoint `path` into the training objects; returns its step."""
    ckpt.load_into(model, ckpt.load(path, "model", device), os.path.join(path, "model"))
    ema.load_state_dict(model, ckpt.load(path, "ema", device))
    state = ckpt.load(path, "training_state", "cpu")
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return state["step"]
