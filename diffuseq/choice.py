"""The decoding choice saved with a checkpoint: `decoding.json`, its settings, and how saved
settings and the caller's combine. tuning.py chooses; the pipeline and the decoders read."""
import json
import os

from .checkpoint import CheckpointError
from .family import FAMILIES, SAMPLERS as _REGISTRY

FILE = "decoding.json"
# the keys a saved choice may hold, with their types
SETTINGS = {"sampler": str, "steps": int, "init": str, "t_start": int, "absorb_rate": float,
            "skip": str, "order": int, "sde": bool, "lengths": str, "after_absorb": str, "remask": str,
            "edits": int, "length_beam": int, "temperature": float, "schedule": str, "remask_mode": str,
            "dedup": bool}
SAMPLERS = tuple(_REGISTRY)


def _prior(sampler):
    """How a start from the prior is named: "noise" (Gaussian), "all masked" (masked)."""
    spec = _REGISTRY.get(sampler)
    return FAMILIES[spec.family if spec is not None else "gaussian"].prior


def describe(s):
    """A short name of a setting: "dpm 10, source t=400", "dpm 10, noise, absorb 0.0"."""
    parts = [f"{s['sampler']} {s['steps']}",
             f"source t={s['t_start']}" if s.get("init") == "source" else _prior(s["sampler"])]
    parts += [f"absorb {s['absorb_rate']}"] if s.get("absorb_rate") is not None else []
    parts += [s["skip"]] if s.get("skip") else []
    parts += ["sde"] if s.get("sde") else []
    parts += [f"{s['lengths']} length"] if s.get("lengths") else []
    parts += [f"order {s['order']}"] if s.get("order") else []
    parts += [f"after absorb {s['after_absorb']}"] if s.get("after_absorb") else []
    parts += [f"remask {s['remask']}"] if s.get("remask") else []
    parts += [f"{s['edits']} edits"] if s.get("edits", 1) > 1 else []
    parts += [f"{s['length_beam']} lengths"] if s.get("length_beam", 1) > 1 else []
    parts += [f"{s['schedule']} schedule"] if s.get("schedule") else []
    parts += [s["remask_mode"]] if s.get("remask_mode") else []
    parts += [f"temperature {s['temperature']}"] if s.get("temperature") is not None else []
    parts += ["dedup"] if s.get("dedup") else []
    return ", ".join(parts)


def check_settings(s, where):
    """A setting read from a file: only known keys, of the right types, else CheckpointError."""
    if not isinstance(s, dict):
        raise CheckpointError(f"{where}: a decoding setting must be an object")
    for k, v in s.items():
        want = SETTINGS.get(k)
        if want is None:
            raise CheckpointError(f"{where}: unknown decoding setting {k!r} (known: {', '.join(SETTINGS)})")
        ok = v is None or (isinstance(v, want) and not (want is int and isinstance(v, bool))) \
            or (want is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise CheckpointError(f"{where}: decoding setting {k} = {v!r} is not a {want.__name__}")
    if s.get("sampler") not in (None, *SAMPLERS):
        raise CheckpointError(f"{where}: unknown sampler {s['sampler']!r}")
    return s


def load_choice(ckpt_dir):
    """The saved choice of a checkpoint folder ({"best": ..., "dpm": ..., ...}), or None."""
    path = os.path.join(ckpt_dir, FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            choice = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(choice, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for key in ("best", *SAMPLERS):
        if choice.get(key) is not None:
            check_settings(choice[key], f"{path}: {key}")
    return choice


def merge(saved, given, sampler=None):
    """The settings to decode with: those the caller gave (not None) win over the saved ones, and
    the saved ones over the defaults of sample_ids. A saved setting for another sampler than the
    caller's is not used."""
    out = {}
    if saved and (sampler is None or saved.get("sampler") == sampler):
        out.update({k: v for k, v in saved.items() if v is not None})
        if given.get("init") not in (None, saved.get("init")) and given.get("t_start") is None:
            out.pop("t_start", None)  # a start time belongs to the start it was chosen with
    out.update({k: v for k, v in given.items() if v is not None})
    if sampler is not None:
        out["sampler"] = sampler
    return out


