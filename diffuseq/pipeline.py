"""The decoding pipeline: a trained denoiser with its tokenizer, schedule, training arguments and
length rule (lengths.py), from source strings to generated strings.

    from diffuseq import DiffuSeq
    DiffuSeq.from_pretrained("diffusion_models/my_run").generate(["how do i learn python?"])

A run folder resolves to its checkpoint with the lowest validation loss. Settings not given come
from the checkpoint's decoding.json (chosen on validation by tune_decode.py), if any, then from
the defaults of `Decoding`.
"""
import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import checkpoint as ckpt
from .adapters import Clamp, Denoise
from .config import load_args, model_config
from .dist import pick_device
from .family import SAMPLERS, check_sampler, family_of, get_sampler
from .layout import Layout
from .lengths import LENGTHS, LengthRule
from .model import Denoiser
from .schedule import DiscreteSchedule
from .tokenizer import Tokenizer
from .choice import load_choice, merge

INITS = ("noise", "source")
# where a source start begins when nobody says, as a share of T: on the Bible's default model, one
# solver step from t = 400 of 2000 scored as well as 3 (57.8 BLEU on 500 test verses)
DEFAULT_SOURCE_SHARE = 0.2


def default_source_t(T):
    """The training timestep a source start begins at when nobody says: 0.2 T."""
    return round(DEFAULT_SOURCE_SHARE * T)


@dataclass
class Decoding:
    """How to decode, shared by every sampler; `options` holds what only the sampler reads
    (samplers.AncestralOptions, DPMOptions, ...; masked_samplers.TopkOptions, MDLMOptions). The
    masked family reads the sampler, steps, lengths, length_margin and length_beam; the rest is
    the Gaussian family's.

    init: "noise" starts from pure noise around m (the original's way); "source" from the source
    laid over the target region (see DiffuSeq.source_start), noised to t_start: the model edits
    the source instead of writing from nothing. t_start: the training timestep decoding starts
    from (None: T - 1 for noise, 0.2 T for source).

    lengths: "predicted" (a model with a length head) gives each input a target region of its
    predicted length + [SEP] + length_margin positions (None: the margin the model was trained
    with) and hides the rest; "source" a region of the source's length (any model), "longer" of
    the longer of the two; "full" the whole sequence, as the original.

    absorb_rate: the probability per unit of noise std that a step absorbs a target token into m
    (DiffuSeq-v2's discrete noise at sampling time). None: the rate the model was trained with
    for noise starts of --denoise models, else 0.

    clamping: round the predicted z_0 to the nearest word embedding (see samplers.clamps_at);
    None: for ancestral sampling of models without a learned absorbing state, as the original.

    edits: passes of a source start; each after the first starts from the last one's output, laid
    where it was and noised to t_start again (iterated edits).

    length_beam: K > 1 decodes each input at K target lengths around its region's (n, n - 1,
    n + 1, n - 2, ...; same seed each) and keeps, per input, the output the model is surest of:
    the highest mean log-probability of its tokens under the final prediction (the length beam
    of mask-predict). Needs a length region (lengths other than "full")."""
    sampler: str = "dpm"
    steps: Optional[int] = None  # None: the sampler's default (dpm 10, ancestral 50)
    init: str = "noise"
    t_start: Optional[int] = None
    lengths: str = "predicted"
    length_margin: Optional[int] = None
    absorb_rate: Optional[float] = None
    clamping: Optional[bool] = None
    clamp_step: int = 0
    clamp_first: bool = True
    edits: int = 1
    length_beam: int = 1
    options: object = None

    @classmethod
    def from_kwargs(cls, sampler="dpm", **kw):
        """Keyword arguments (None meaning "not given") -> Decoding; those of the sampler's
        options go there. A keyword no sampler knows is a ValueError naming it; one that only
        another sampler reads is ignored."""
        spec = get_sampler(sampler)
        kw = {k: v for k, v in kw.items() if v is not None}
        shared = {f.name for f in dataclasses.fields(cls)} - {"sampler", "options"}
        own = {f.name for f in dataclasses.fields(spec.options)}
        other = {f.name for s in SAMPLERS.values() for f in dataclasses.fields(s.options)} - own
        unknown = set(kw) - shared - own - other
        if unknown:
            raise ValueError(f"unknown decoding setting(s): {', '.join(sorted(unknown))}")
        dec = cls(sampler=sampler, options=spec.options(**{k: v for k, v in kw.items() if k in own}),
                  **{k: v for k, v in kw.items() if k in shared})
        if dec.init not in INITS:
            raise ValueError(f"unknown init {dec.init!r}; choose {' or '.join(INITS)}")
        if not isinstance(dec.edits, int) or dec.edits < 1:
            raise ValueError(f"edits must be a whole number >= 1, not {dec.edits!r}")
        if dec.edits > 1 and dec.init != "source":
            raise ValueError("edits > 1 repeats a source start: use it with --init source")
        if dec.lengths not in LENGTHS:
            raise ValueError(f"unknown lengths {dec.lengths!r}; choose one of {', '.join(LENGTHS)}")
        if not isinstance(dec.length_beam, int) or dec.length_beam < 1:
            raise ValueError(f"length_beam must be a whole number >= 1, not {dec.length_beam!r}")
        return dec

    def start_time(self, T):
        """The training timestep decoding starts from (None: T - 1, pure noise), checked: a source
        start defaults to 0.2 T, and a noise start cannot begin lower than T - 1, since at a lower
        level z_t still holds z_0, which a noise start does not have."""
        t_start = self.t_start
        if self.init == "source" and t_start is None:
            t_start = default_source_t(T)
        if t_start is not None and not 0 <= t_start < T:
            raise ValueError(f"t_start {t_start} is outside the training timesteps 0..{T - 1}")
        if self.init == "noise" and t_start is not None and t_start < T - 1:
            raise ValueError(f"a noise start begins at t = {T - 1}, where z_t is pure noise; to begin at "
                             f"t_start {t_start} start from the source (--init source)")
        return t_start

    def absorption(self, args):
        """The absorption rate while sampling: the given one, else the trained --denoise_rate for
        noise starts of --denoise models, else 0."""
        if self.absorb_rate is not None:
            return self.absorb_rate
        return args.denoise_rate if args.denoise and self.init == "noise" else 0.0


class DiffuSeq:
    """A trained denoiser with its tokenizer, diffusion schedule and training arguments, ready to
    decode. `from_pretrained` loads one from a checkpoint or run folder."""

    def __init__(self, model, tokenizer, args, device="cpu", dtype=None, compile=False, path=None,
                 weights="model", saved=None):
        self.model = model.to(device).eval()
        self.tokenizer, self.args, self.path, self.weights = tokenizer, args, path, weights
        self.device = torch.device(device)
        self.seq_len = model.cfg.seq_len
        self.regions = LengthRule(model, args.length_margin)  # where each input's target lies
        self.layout = Layout(tokenizer, self.seq_len, args.layout)  # strings <-> ids
        self.sched = DiscreteSchedule.from_name(args.noise_schedule, args.diffusion_steps)
        self.saved = saved  # decoding settings chosen on validation (decoding.json), or None
        self.family = family_of(args)  # how it trained and how it decodes (family.py)
        self.dtype = dtype  # autocast dtype of the denoiser (None: fp32)
        self.net = self.model
        if compile:  # fixed shapes: on GPU, CUDA graphs replay the whole denoiser call
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.net = torch.compile(self.model, mode=mode)

    @classmethod
    def from_pretrained(cls, path, device="auto", use_ema=True, dtype=None, compile=False):
        """Load a checkpoint folder, or a run folder's best checkpoint (by validation loss, else
        its latest): the EMA weights unless use_ema is False."""
        path = ckpt.resolve(path, "best")
        args = load_args(os.path.join(path, "args.json"))
        tokenizer = Tokenizer.load(os.path.join(path, "tokenizer.json"))
        cfg = model_config(args, tokenizer.vocab_size)
        cfg.grad_checkpoint = False
        model = Denoiser(cfg)
        weights = "ema" if use_ema and ckpt.has(path, "ema") else "model"
        ckpt.load_into(model, ckpt.load(path, weights, "cpu"), os.path.join(path, weights))
        return cls(model, tokenizer, args, pick_device(device), dtype, compile, path, weights, load_choice(path))

    @property
    def name(self):
        """`<run>_<checkpoint>`, used to name output folders."""
        p = os.path.normpath(self.path)
        return f"{os.path.basename(os.path.dirname(p))}_{os.path.basename(p)}"

    # ------------------------------------------------------------------ inputs and outputs
    def inputs(self, sources, references=None):
        """Token ids and masks [B, L] of the sources, each followed by its target region (Layout)."""
        return self.layout.inputs(sources, references)

    def detokenize(self, out, mask, cleanup="cut"):
        """Token ids [B, L] -> the generated text of each row's target region (Layout)."""
        return self.layout.detokenize(out, mask, cleanup)

    # ------------------------------------------------------------------ lengths
    def region_lengths(self, sources, references=None, margin=None, lengths="predicted"):
        """The length each input is decoded at (LengthRule.decode_lengths)."""
        return self.regions.decode_lengths(self.layout, sources, references, margin, lengths, self.device)

    def length_batches(self, sources, references=None, bsz=64, length_margin=None, lengths="predicted"):
        """Input indices in batches of up to bsz, in order of the length they are decoded at
        (region_lengths), so each batch is cut to little more than its inputs need."""
        region = self.region_lengths(sources, references, length_margin, lengths)
        order = sorted(range(len(sources)), key=lambda i: region[i])
        return [order[s:s + bsz] for s in range(0, len(order), bsz)]

    # ------------------------------------------------------------------ sampling
    def denoiser(self, mask, keep=None, init="noise"):
        """The model as the samplers see it for one batch (adapters.Denoise). A source start of a
        model trained as an editor (--source_rate) tells the model the true time, below its noise
        floor too, as it was trained."""
        editor = init == "source" and self.args.source_rate > 0
        return Denoise(self.net, mask, keep, t_min=0 if editor else self.args.t_min,
                       self_cond=self.model.cfg.self_cond, logits=self.model.get_logits,
                       dtype=self.dtype, copy=self.net is not self.model)

    @torch.no_grad()
    def sample_ids(self, ids, mask, sampler=None, steps=None, seed=0, progress=None, **kw):
        """Generate the target region of one batch: ids, mask [B, L] -> token ids [B, L].
        The keywords are those of Decoding and of the sampler's options (sampler None: the
        family's default, dpm for Gaussian models)."""
        dec = Decoding.from_kwargs(sampler or self.family.default_sampler(), steps=steps, **kw)
        return self.sample(ids, mask, dec, seed, progress)

    @torch.no_grad()
    def sample(self, ids, mask, dec, seed=0, progress=None):
        """sample_ids with a Decoding."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        if dec.length_beam == 1:
            return self._sample(ids, mask, dec, seed, progress)[0]
        if not self.regions.cuts(dec.lengths):
            raise ValueError("a length beam needs a length region: --lengths predicted, source or longer "
                             "(a model without a length head: source)")
        best, score = self._sample(ids, mask, dec, seed, progress, 0, scored=True)
        for k in range(1, dec.length_beam):
            out, s = self._sample(ids, mask, dec, seed, progress, (k + 1) // 2 * (-1 if k % 2 else 1), scored=True)
            best = torch.where((s > score)[:, None], out, best)
            score = torch.maximum(s, score)
        return best

    def _sample(self, ids, mask, dec, seed, progress, offset=0, scored=False):
        """One decoding of a batch by the model's family, each target region `offset` tokens longer
        (shorter) than the rule gives: token ids [B, L] and, when scored, the mean log-probability
        of each row's tokens [B] (else None)."""
        check_sampler(self.family, dec.sampler)
        full_ids, keep = ids, None
        if self.regions.cuts(dec.lengths):
            ids, mask, keep = self.regions.cut(ids, mask, self.regions.margin(dec.length_margin), dec.lengths,
                                               offset)
        g = torch.Generator(device=self.device).manual_seed(seed)
        out, logp = self.family.decode(self, ids, mask, keep, dec, g, progress, scored)
        rows = (mask if keep is None else mask * keep).bool()
        score = self._score(logp, out, rows) if scored else None
        if keep is None:
            return out, score
        pad = self.tokenizer.pad_id
        out = out.masked_fill(~keep, pad)
        return torch.cat([out, torch.full_like(full_ids[:, out.shape[1]:], pad)], 1), score

    def _score(self, logp, out, rows):
        """The mean log-probability [B] of each row's output tokens (logp [B, L], of its region
        rows [B, L]), counted up to its first [SEP], that [SEP] included: the [PAD]s of the margin
        after it are not the output's and do not score it."""
        sep = (out == self.tokenizer.sep_id) & rows
        spoken = rows & ((sep.long().cumsum(1) - sep.long()) == 0)
        return (logp * spoken).sum(1) / spoken.sum(1).clamp(min=1)

    def settings(self, sampler=None, use_saved=True, **given):
        """The keyword arguments to decode with: `given` (those not None) over the settings saved
        with the checkpoint (decoding.json: those of `sampler`, or the best of all when sampler is
        None) over the defaults, whose sampler is the family's (dpm, topk); a source start gets its default t_start
        here."""
        saved = None
        if use_saved and self.saved:
            saved = self.saved.get(sampler or "best")
        out = merge(saved, given, sampler)
        out.setdefault("sampler", self.family.default_sampler())
        if out.get("init") == "source" and out.get("t_start") is None:
            out["t_start"] = default_source_t(self.args.diffusion_steps)  # named where it is shown
        return out

    def generate(self, sources, sampler=None, steps=None, num_samples=1, seed=0, bsz=64, use_saved=True,
                 cleanup="cut", **kw):
        """Source strings -> generated strings (a list of num_samples lists when num_samples > 1).

        Settings not given come from the checkpoint's decoding.json (see settings), if any."""
        kw = self.settings(sampler, use_saved, steps=steps, **kw)
        batches = self.length_batches(sources, None, bsz, kw.get("length_margin"), kw.get("lengths", "predicted"))
        outs = []
        for k in range(num_samples):
            texts = [None] * len(sources)
            for b, index in enumerate(batches):
                ids, mask = self.inputs([sources[i] for i in index])
                out = self.sample_ids(ids, mask, seed=batch_seed(seed + k, b), **kw)
                for i, t in zip(index, self.detokenize(out, mask, cleanup)):
                    texts[i] = t
            outs.append(texts)
        return outs[0] if num_samples == 1 else outs


def batch_seed(seed, batch_index):
    """The seed of one batch: the same whatever the number of processes."""
    return (seed * 1_000_003 + batch_index) % (2 ** 63)


__all__ = ["DiffuSeq", "Decoding", "default_source_t", "batch_seed", "INITS", "LENGTHS"]
