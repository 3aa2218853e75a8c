"""Checkpoints of the original DiffuSeq (Shark-NLP/DiffuSeq, v1 and v2) as checkpoints of ours.

    python -m diffuseq.checkpoint import-original RUN_DIR [--out DIR] [--step N]

RUN_DIR is one of the original's run folders: its `ema_<rate>_<step>.pt` files (the weights it
saves), `training_args.json` (its arguments) and the BERT vocabulary it saved beside them
(`vocab.txt`, from save_pretrained). The `.pt` file is read through torch's restricted unpickler
(tensors only), and the result is one of our run folders holding one checkpoint with the matching
profile (recipe original-v1 or original-v2, the original's layout, objective and output head), so
every decoder here, the original's own included (`--sampler original-v1`, `original-v2`), reads
it.

How the weights map: the original's BERT encoder layers become our layers (query, key and value
stacked into one projection), its position table is cut to seq_len, and its output head's bias
becomes lm_bias. Its word embedding comes from `lm_head.weight`: the two are one tied tensor, the
original writes the EMA copy under `word_embedding.weight` and the live copy under
`lm_head.weight`, and loading its file leaves the second in place, so the original's decoders
round and read tokens with the live embedding. We keep what they use.
"""
import json
import os
import re

import torch

from . import checkpoint as ckpt
from .config import TrainConfig, model_config, save_args
from .model import BERT_LAYER, Denoiser, bert_layer
from .recipes import get as get_recipe
from .tokenizer import TokenizerError, load_bert_vocab

PT_RE = re.compile(r"^(ema_[0-9.]+|model)_?(\d+)\.pt$")
# arguments of the original that must have these values for its model to be ours
REQUIRED_ARGS = {"predict_xstart": True, "rescale_timesteps": True, "learn_sigma": False,
                 "timestep_respacing": "", "use_kl": False}


class OriginalRunError(ckpt.CheckpointError):
    """A file or folder that is not an original DiffuSeq run we can read."""


def find_weights(run_dir, step=None):
    """(path, step) of the original's weights in run_dir: the newest ema_*.pt (or model*.pt) or
    the one of `step`; run_dir may also name the .pt file itself."""
    if os.path.isfile(run_dir):
        m = PT_RE.match(os.path.basename(run_dir))
        if not m:
            raise OriginalRunError(f"{run_dir}: not an original DiffuSeq weights file (ema_<rate>_<step>.pt)")
        return run_dir, int(m.group(2))
    if not os.path.isdir(run_dir):
        raise OriginalRunError(f"{run_dir}: no such folder")
    found = []
    for name in os.listdir(run_dir):
        m = PT_RE.match(name)
        if m:
            found.append((name.startswith("ema"), int(m.group(2)), name))
    if step is not None:
        found = [f for f in found if f[1] == step]
    if not found:
        want = f" of step {step}" if step is not None else ""
        raise OriginalRunError(f"{run_dir}: no ema_<rate>_<step>.pt{want} here (the original's saved weights)")
    _, s, name = max(found, key=lambda f: (f[1], f[0]))  # the newest step, its EMA file first
    return os.path.join(run_dir, name), s


def read_training_args(run_dir):
    path = os.path.join(run_dir, "training_args.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise OriginalRunError(f"{path}: missing (the original writes it beside its checkpoints)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OriginalRunError(f"{path}: not JSON ({e})") from None
    if not isinstance(d, dict):
        raise OriginalRunError(f"{path}: not a JSON object")
    for k, v in REQUIRED_ARGS.items():
        if k in d and d[k] != v:
            raise OriginalRunError(f"{path}: {k} = {d[k]!r}; only runs with {k} = {v!r} (the papers') can be imported")
    if d.get("hidden_t_dim", d.get("hidden_dim")) != d.get("hidden_dim"):
        raise OriginalRunError(f"{path}: hidden_t_dim {d.get('hidden_t_dim')} differs from hidden_dim "
                           f"{d.get('hidden_dim')}; the time embedding here is hidden_dim wide")
    return d


def _shape(state, run_dir, targs, heads=None):
    """(width, layers, heads, ffn) of the original's encoder: sizes from the weights, the number
    of heads from its BERT config.json (beside the weights, or at its config_name), or width / 64."""
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("input_transformers.layer."))
    width = state["position_embeddings.weight"].shape[1]
    ffn = state["input_transformers.layer.0.intermediate.dense.weight"].shape[0]
    if heads is None:
        for folder in (run_dir, targs.get("config_name") or ""):
            cfg = os.path.join(folder, "config.json")
            if folder and os.path.isfile(cfg):
                with open(cfg) as f:
                    heads = json.load(f).get("num_attention_heads")
                break
    return width, layers, heads or max(1, width // 64), ffn


def convert_state(state, seq_len, learned_m):
    """The original's state dict -> ours (see the module's docstring)."""
    s = {k.removeprefix("module."): v for k, v in state.items()}
    need = ["lm_head.weight", "lm_head.bias", "position_embeddings.weight", "LayerNorm.weight"]
    missing = [k for k in need if k not in s]
    if missing:
        raise OriginalRunError(f"not an original DiffuSeq model (missing {', '.join(missing)})")
    out = {"word_embedding.weight": s["lm_head.weight"], "lm_bias": s["lm_head.bias"],
           "position_embeddings.weight": s["position_embeddings.weight"][:seq_len],
           "ln.weight": s["LayerNorm.weight"], "ln.bias": s["LayerNorm.bias"]}
    for mod in ("time_embed", "input_up_proj", "output_down_proj"):
        for k, v in s.items():
            if k.startswith(mod + "."):
                out[k] = v
    if learned_m:
        out["mean_embed"] = s["mean_embed"]
    i = 0
    while f"input_transformers.layer.{i}.attention.self.query.weight" in s:
        out.update(bert_layer(s, "input_transformers.layer.", i))
        i += 1
    return {k: v.float().contiguous() for k, v in out.items()}


# processes of the original's own training scripts (scripts/train.sh of each branch), by
# (v2, per-process batch): its batch_size is per process, and training_args.json does not say how many
SCRIPT_PROCESSES = {(False, 2048): 4, (True, 425): 2}


def processes_of(targs, given=None):
    """(processes, how we know) of an original run: given, or its branch's train script's when its
    per-process batch is that script's, else 1."""
    if given:
        return int(given), "given (--processes)"
    key = (bool(targs.get("learned_mean_embed", False)), int(targs.get("batch_size", 0)))
    if key in SCRIPT_PROCESSES:
        return SCRIPT_PROCESSES[key], "its branch's scripts/train.sh"
    return 1, "assumed (give --processes)"


def profile_args(targs, shape, out_dir, vocab_dir, processes=1):
    """Our TrainConfig for an original run: the matching recipe with the run's own values. The
    original's batch_size is per process: ours (--bsz) is global, batch_size x processes."""
    width, layers, heads, ffn = shape
    v2 = bool(targs.get("learned_mean_embed", False))
    recipe = "original-v2" if v2 else "original-v1"
    base = dict(TrainConfig().to_dict(), **get_recipe(recipe).args)
    ema = targs.get("ema_rate", 0.9999)
    own = dict(recipe=recipe, dataset=targs.get("dataset", "qqp"), data_dir=targs.get("data_dir", base["data_dir"]),
               seq_len=int(targs["seq_len"]), hidden_dim=int(targs["hidden_dim"]),
               diffusion_steps=int(targs["diffusion_steps"]), noise_schedule=targs.get("noise_schedule", "sqrt"),
               schedule_sampler=targs.get("schedule_sampler", "lossaware"), lr=float(targs.get("lr", 1e-4)),
               learning_steps=int(targs.get("learning_steps", 50000)),
               ema_rate=float(str(ema).split(",")[0]), seed=int(targs.get("seed", 102)),
               dropout=float(targs.get("dropout", 0.1)), weight_decay=float(targs.get("weight_decay", 0.0)),
               bsz=int(targs["batch_size"]) * processes if "batch_size" in targs else base["bsz"],
               microbatch=int(targs.get("microbatch", 0)) if int(targs.get("microbatch", 0)) > 0
               else int(targs.get("batch_size", base["microbatch"])),  # the original's 0 or -1: the whole batch
               vocab="bert", vocab_path=vocab_dir, width=width, layers=layers, heads=heads, ffn=ffn,
               learned_mean_embed=v2, denoise=bool(targs.get("denoise", False)),
               denoise_rate=float(targs.get("denoise_rate", 0.5)),
               precision="fp16" if targs.get("use_fp16") else base["precision"], checkpoint_path=out_dir,
               notes=f"imported from {targs.get('checkpoint_path', '?')}")
    return TrainConfig.from_dict(dict(base, **own))


def import_original(run_dir, out_dir=None, step=None, heads=None, processes=None):
    """Write one of our run folders from an original run folder; returns its checkpoint folder.
    processes: how many processes trained it (default: processes_of)."""
    run_dir = os.path.normpath(run_dir)
    pt, step = find_weights(run_dir, step)
    folder = os.path.dirname(pt)
    targs = read_training_args(folder)
    if targs.get("vocab", "bert") != "bert":
        raise OriginalRunError(f"{folder}: a run with its own vocabulary file ({targs.get('vocab')}); only BERT "
                           "vocabularies (--vocab bert) can be imported")
    try:
        tokenizer = load_bert_vocab(folder)
    except TokenizerError:
        raise OriginalRunError(f"{folder}: no vocab.txt beside the weights (the original saves its BERT "
                           "vocabulary there); copy the run's vocab.txt in") from None
    state = ckpt.load_legacy(pt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OriginalRunError(f"{pt}: not a table of tensors")
    try:
        shape = _shape(state, folder, targs, heads)
    except (KeyError, ValueError, IndexError) as e:
        raise OriginalRunError(f"{pt}: not an original DiffuSeq model ({e})") from None
    out_dir = out_dir or os.path.join("diffusion_models", os.path.basename(folder) + "_imported")
    nproc, known = processes_of(targs, processes)
    args = profile_args(targs, shape, os.path.abspath(out_dir), os.path.abspath(folder), nproc)
    if state.get("lm_head.weight") is not None and state["lm_head.weight"].shape[0] != tokenizer.vocab_size:
        raise OriginalRunError(f"{pt}: {state['lm_head.weight'].shape[0]} word embeddings, but {folder}/vocab.txt "
                           f"has {tokenizer.vocab_size} entries")
    model = Denoiser(model_config(args, tokenizer.vocab_size))
    try:
        ours = convert_state(state, args.seq_len, args.learned_mean_embed)
    except KeyError as e:
        raise OriginalRunError(f"{pt}: not an original DiffuSeq model (missing {e})") from None
    ckpt.load_into(model, ours, pt)
    os.makedirs(out_dir, exist_ok=True)
    save_args(args, os.path.join(out_dir, "args.json"))
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "imported.json"), "w") as f:
        json.dump({"from": os.path.abspath(pt), "step": step, "processes": nproc, "processes_from": known,
                   "original_args": targs}, f, indent=2)
    return ckpt.save_checkpoint(out_dir, step, {
        "model.safetensors": model.state_dict(), "args.json": os.path.join(out_dir, "args.json"),
        "tokenizer.json": os.path.join(out_dir, "tokenizer.json")})


def export_original(model, max_positions=512):
    """Our denoiser's weights under the original's names (the inverse of convert_state), for the
    original code to start from: its TransformerNetModel loads the result. Position rows past
    seq_len are zeros (the original never reads them at that seq_len)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    cfg = model.cfg
    out = {"position_ids": torch.arange(max_positions)[None], "word_embedding.weight": sd["word_embedding.weight"],
           "lm_head.weight": sd["word_embedding.weight"], "lm_head.bias": sd["lm_bias"],
           "position_embeddings.weight": torch.cat([sd["position_embeddings.weight"],
                                                    torch.zeros(max_positions - cfg.seq_len, cfg.width)]),
           "LayerNorm.weight": sd["ln.weight"], "LayerNorm.bias": sd["ln.bias"]}
    if cfg.learned_mean_embed:
        out["mean_embed"] = sd["mean_embed"]
    for k, v in sd.items():
        if k.split(".")[0] in ("time_embed", "input_up_proj", "output_down_proj"):
            out[k] = v
    for i in range(cfg.layers):
        p, q = f"input_transformers.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            for j, name in enumerate(("query", "key", "value")):
                out[f"{p}attention.self.{name}.{kind}"] = sd[f"{q}attn.qkv.{kind}"].chunk(3)[j].clone()
            for ours, theirs in BERT_LAYER:
                out[f"{p}{theirs}.{kind}"] = sd[f"{q}{ours}.{kind}"]
    return out

