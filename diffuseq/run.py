"""The run folder: its arguments and tokenizer, its checkpoints (everything an exact resume
needs), and resuming from one. A command that fails while setting up a new run leaves no folder
behind.

Rank 0 alone reads and writes the run folder. What the other ranks need from it (the arguments,
the tokenizer, the checkpoint a run resumes from) rank 0 sends them through the process group, so
the nodes of a run need not share a filesystem, and rank 0's arguments are the run's: a rank whose
command line differs takes rank 0's (with a warning naming what differed)."""
import contextlib
import dataclasses
import logging
import os
import random
import shutil

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

from . import checkpoint as ckpt
from . import dist
from .config import TrainConfig, load_args, save_args
from .data.dataset import DataError
from .logs import close_logging, setup_logging
from .plots import plot_curves
from .tokenizer import Tokenizer, TokenizerError, build_tokenizer

log = logging.getLogger("diffuseq")

# arguments that may be changed when a run is resumed (without a warning); any argument not given
# again comes from the checkpoint
RESUMABLE = {"learning_steps", "max_minutes", "save_interval", "log_interval", "eval_interval", "eval_batches",
             "keep_checkpoints", "device", "wandb", "progress", "resume_checkpoint", "compile", "pack",
             "explicit", "checkpoint_path", "tune_decoding"}


def resume_args(args):
    """The checkpoint's saved arguments, overridden by those given explicitly now (defaults do
    not count: a bare --resume_checkpoint continues with the run's own learning_steps and
    intervals). Rank 0 reads the checkpoint and every rank gets its result. Returns (args,
    checkpoint folder)."""
    def read():
        path = ckpt.resolve(args.resume_checkpoint)
        saved = load_args(os.path.join(path, "args.json"))
        given = {k: getattr(args, k) for k in args.explicit}
        if given.get("family", saved.family) != saved.family:
            raise ckpt.CheckpointError(f"{path} is a {saved.family}-family checkpoint and cannot resume as "
                                       f"--family {given['family']}: the two share weight names, not meaning")
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE and getattr(saved, k) != v)
        if changed:
            log.warning("resuming with changed arguments: %s", ", ".join(changed))
        merged = saved.replace(**{**given, "resume_checkpoint": args.resume_checkpoint, "explicit": args.explicit})
        if "checkpoint_path" not in args.explicit:
            merged = merged.replace(checkpoint_path=os.path.dirname(os.path.normpath(path)))
        return {"args": merged.to_dict(), "path": path}

    got = dist.broadcast_json(_on_main(read))
    return TrainConfig.from_dict(got["args"]), got["path"]


# the errors main() reports in one line: another rank raises rank 0's again, as the same class
_USER_ERRORS = {e.__name__: e for e in (ckpt.CheckpointError, TokenizerError, DataError, ValueError,
                                        FileNotFoundError)}


def _on_main(read):
    """read() on rank 0 alone, its value there (None on the other ranks). If it fails, every rank
    raises the error: rank 0 its own, the others one of the same class and message (a
    RuntimeError when it is not one of the user errors), so no rank waits for what never comes."""
    value, error, failure = None, None, None
    if dist.rank() == 0:
        try:
            value = read()
        except Exception as e:
            error, failure = e, [type(e).__name__, str(e)]
    failure = dist.broadcast_json(failure)
    if error is not None:
        raise error
    if failure:
        name, message = failure
        raise _USER_ERRORS[name](message) if name in _USER_ERRORS else RuntimeError(f"rank 0: {name}: {message}")
    return value


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
    """Start the log and return the tokenizer: a resumed run's, or one built from the data. Rank 0
    creates the run folder and writes tokenizer.json and args.json there; the other ranks get the
    tokenizer (its JSON) and rank 0's arguments, which replace theirs: `args` is updated in
    place."""
    def make():
        os.makedirs(args.checkpoint_path, exist_ok=True)
        setup_logging(args.checkpoint_path, True)
        if resume_dir:
            tok = Tokenizer.load(os.path.join(resume_dir, "tokenizer.json"))
        else:
            tok = build_tokenizer(args.vocab, args.data_dir, args.vocab_size, args.vocab_path, args.tokenizer_algo,
                                  skip_bad_lines=args.skip_bad_lines, lowercase=args.lowercase)
        # a resumed run may go on in another folder: each folder has the tokenizer its checkpoints copy
        tok.save(os.path.join(args.checkpoint_path, "tokenizer.json"))
        save_args(args, os.path.join(args.checkpoint_path, "args.json"))
        return {"tokenizer": tok.to_str(), "args": args.to_dict()}

    if not proc.is_main:
        setup_logging(args.checkpoint_path, False)  # standard output only: no file
    sent = dist.broadcast_json(_on_main(make))
    if not proc.is_main:
        main_args = TrainConfig.from_dict(sent["args"])
        differ = [f.name for f in dataclasses.fields(args) if getattr(args, f.name) != getattr(main_args, f.name)]
        if differ:
            log.warning("rank %d trains with rank 0's arguments; its own differ in %s", proc.rank, ", ".join(differ))
        for f in dataclasses.fields(args):
            setattr(args, f.name, getattr(main_args, f.name))
    # every rank, rank 0 too, uses the tokenizer rebuilt from the same JSON: equal on every rank
    return Tokenizer(HFTokenizer.from_str(sent["tokenizer"]))


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
             "step": step, "rng": rng_state(), "ema_live_averages": ema.shadow_of(model)}
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
    """Load checkpoint `path` into the training objects; returns its step. Rank 0 reads the
    folder and loads it first (a file that does not fit fails there, before anything is sent),
    then sends what it read to the other ranks: the weights, the EMA and the whole training state
    (optimizer moments, random states), which DDP's copy of the weights would not give them."""
    def load(weights, ema_weights, state):
        ckpt.load_into(model, weights, os.path.join(path, "model"))
        ema.load_state_dict(model, ema_weights)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        ema.load_shadow(model, state.get("ema_live_averages", {}))
        set_rng_state(state["rng"])
        return state["step"]

    def read():
        weights, ema_weights = ckpt.load(path, "model", device), ckpt.load(path, "ema", device)
        state = ckpt.load(path, "training_state", "cpu")
        flat = ckpt.flatten_state(state)
        return load(weights, ema_weights, state), weights, ema_weights, flat

    step, weights, ema_weights, (tree, tensors) = _on_main(read) or (None, None, None, (None, None))
    weights = dist.broadcast_tensors(weights, device)
    ema_weights = dist.broadcast_tensors(ema_weights, device)
    state = ckpt.unflatten_state(dist.broadcast_json(tree), dist.broadcast_tensors(tensors, "cpu"))
    if dist.rank() != 0:
        step = load(weights, ema_weights, state)
    log.info("resumed from %s at step %d", path, step)
    return step
