"""Decoding: load a checkpoint folder once, turn source strings into generated strings.

    from diffuseq.decoding import load_model
    m = load_model("diffusion_models/my_run")   # a run folder -> its best checkpoint by validation loss
    m.generate(["how do i learn python?"], sampler="dpm", steps=10)

`decode_split` is what `run_decode.py` and `run_decode_solver.py` both call: it decodes a split
of a dataset, sharded over processes, and writes one JSON line per input in input order.
"""
import json
import os
import time

import torch

from . import checkpoint as ckpt
from . import dist
from .config import load_args, model_config
from .data.dataset import make_input, read_pairs
from .model import Denoiser
from .diffusion import q_sample
from .samplers import ancestral_sample, dpm_solver_sample
from .schedule import DiscreteSchedule, NoiseScheduleVP
from .tokenizer import Tokenizer
from .tuning import load_choice, merge


INITS = ("noise", "source")
LENGTHS = ("predicted", "source", "longer", "full")
# where a source start begins when nobody says, as a share of T: on the Bible's default model, one
# solver step from t = 400 of 2000 scored as well as 3 (57.8 BLEU on 500 test verses)
DEFAULT_SOURCE_SHARE = 0.2


def default_source_t(T):
    """The training timestep a source start begins at when nobody says: 0.2 T."""
    return round(DEFAULT_SOURCE_SHARE * T)


def nearest_embedding(z, emb):
    """Replace each vector of z [..., D] by its nearest row of emb [V, D] in L2 distance.

    |z - e|^2 = |z|^2 - 2 z.e + |e|^2, and |z|^2 does not change the argmin: one matmul.
    """
    flat = z.reshape(-1, z.shape[-1])
    d = emb.pow(2).sum(-1)[None, :] - 2 * flat @ emb.t()
    return emb[d.argmin(-1)].view_as(z)


class DiffuSeqModel:
    """A trained denoiser with its tokenizer, diffusion schedule and arguments, ready to decode."""

    def __init__(self, path, device="auto", use_ema=True, dtype=None, compile=False):
        self.path = ckpt.resolve(path, "best")
        self.device = dist.pick_device(device)
        self.args = load_args(os.path.join(self.path, "args.json"))
        self.tokenizer = Tokenizer.load(os.path.join(self.path, "tokenizer.json"))
        cfg = model_config(self.args, self.tokenizer.vocab_size)
        cfg.grad_checkpoint = False
        self.model = Denoiser(cfg)
        weights = "ema" if use_ema and ckpt.has(self.path, "ema") else "model"
        self.model.load_state_dict(ckpt.load(self.path, weights, "cpu"))
        self.model.to(self.device).eval()
        self.weights = weights
        self.seq_len = cfg.seq_len
        self.sched = DiscreteSchedule.from_name(self.args.noise_schedule, self.args.diffusion_steps)
        self.saved = load_choice(self.path)  # decoding settings chosen on validation, or None
        self.dtype = dtype  # autocast dtype for the denoiser (None = fp32)
        self.net = self.model
        if compile:  # fixed shapes: on GPU, CUDA graphs replay the whole denoiser call
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.net = torch.compile(self.model, mode=mode)

    @property
    def name(self):
        """`<run>_<checkpoint>`, used to name output folders."""
        p = os.path.normpath(self.path)
        return f"{os.path.basename(os.path.dirname(p))}_{os.path.basename(p)}"

    def inputs(self, sources, references=None):
        """Token ids and masks [B, L] of [CLS] x [SEP] followed by the target region.

        The source is truncated as in training (to leave room for the reference when given)."""
        xs = self.tokenizer.encode_batch(sources)
        ys = self.tokenizer.encode_batch(references) if references is not None else [[]] * len(xs)
        ids = torch.full((len(xs), self.seq_len), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.ones_like(ids)
        for i, (x, y) in enumerate(zip(xs, ys)):
            z, src_len, _ = make_input(x, y, self.seq_len, self.tokenizer.cls_id, self.tokenizer.sep_id)
            ids[i, :src_len] = torch.tensor(z[:src_len])
            mask[i, :src_len] = 0
        return ids, mask

    def denoiser(self, mask, keep=None):
        """The model as the samplers see it, for one batch: (z, t) -> predicted z_0. It knows the
        batch's target mask, raises the time input to the run's noise floor t_min, and, for a
        self-conditioned model, feeds each call the previous call's prediction."""
        t_min = float(self.args.t_min)
        state = {"prev": None}
        use_prev = self.model.cfg.self_cond

        def denoise(z, t):
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                enabled=self.dtype is not None):
                z0 = self.net(z, t.clamp(min=t_min), mask, state["prev"], keep)
            # a compiled net replays CUDA graphs whose output buffer the next call overwrites, and
            # the solver keeps earlier predictions: take a copy of it (.float() alone copies only
            # a half-precision output)
            z0 = z0.to(torch.float32, copy=self.net is not self.model)
            if use_prev:
                state["prev"] = z0 * mask.unsqueeze(-1)
            return z0

        return denoise

    def clamp_fn(self, mask):
        """Rounding of a predicted z_0 to word embeddings, on the target rows only (the source is
        re-imposed after it anyway)."""
        emb, rows = self.model.word_embedding.weight, mask.bool()

        def clamp(z0):
            out = z0.clone()
            out[rows] = nearest_embedding(z0[rows], emb)
            return out
        return clamp

    def source_start(self, ids, mask, keep=None):
        """The source laid over the target region, for decoding as an edit of the source:
        position i of y gets token i of x (with segment positions, y_i and x_i share a position),
        then [SEP], then [PAD]s, cut to the region. ids, mask [B, L] -> ids [B, L]."""
        out = ids.clone()
        pad, sep = self.tokenizer.pad_id, self.tokenizer.sep_id
        src_len = (1 - mask).sum(1).tolist()  # [CLS] x [SEP]
        region = mask.bool() if keep is None else mask.bool() & keep
        for i, n in enumerate(src_len):
            fill = ids[i, 1:n - 1].tolist() + [sep]
            room = int(region[i].sum())
            fill = (fill + [pad] * room)[:room]
            out[i, n:n + room] = torch.tensor(fill, dtype=ids.dtype)
        return out

    @torch.no_grad()
    def sample_ids(self, ids, mask, sampler="ancestral", steps=None, seed=0, clamping=None,
                   clamp_step=0, clamp_first=True, variance="small", order=2, skip="logSNR",
                   t_start=None, lengths="predicted", length_margin=None, progress=None, final_call=True,
                   init="noise", absorb_rate=None, sde=False):
        """Generate the target region for one batch: ids, mask [B, L] -> token ids [B, L].

        lengths: "predicted" (for a model with a length head) gives each example a target region
        of its predicted length + [SEP] + length_margin positions (None: the margin the model
        was trained with, or 4), and hides the rest from attention (it comes back as [PAD]);
        "source" a region of the source's length (any model), "longer" of the longer of the two;
        "full" fills the whole sequence, as the original.

        init: "noise" starts from pure noise around m at t_start (the original's way); "source"
        starts from the source laid over the target region (source_start), noised by
        q(z_t | z_0) to training timestep t_start (default 0.2 T): the model edits the source
        instead of writing from nothing. t_start: the training timestep the decoding starts from
        (None: T - 1 for noise, 0.2 T for source; both samplers take it).

        absorb_rate: the probability per unit of noise std that a step absorbs a target token
        into m (DiffuSeq-v2's discrete noise at sampling time; models with a learned absorbing
        state only). None: the rate the model was trained with (0 for models trained without
        --denoise), and 0 with init "source", whose start absorption would erase.
        sde: DPM-Solver++ on the reverse SDE (order 1 or 2) instead of the ODE.

        clamping: round the predicted z_0 to the nearest word embedding (where clamp_step and
        clamp_first say; see samplers.clamps_at); None: for ancestral sampling of models without
        a learned absorbing state, as the original does. variance: "small" or "large" noise of
        ancestral steps."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        full_ids, keep = ids, None
        if self.uses_regions(lengths):
            ids, mask, keep = self.target_regions(ids, mask, self.margin(length_margin), lengths)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose {' or '.join(INITS)}")
        a = self.args
        T = a.diffusion_steps
        if init == "source" and t_start is None:
            t_start = default_source_t(T)
        if t_start is not None and not 0 <= t_start < T:
            raise ValueError(f"t_start {t_start} is outside the training timesteps 0..{T - 1}")
        if absorb_rate is None:
            absorb_rate = a.denoise_rate if a.denoise and init == "noise" else 0.0
        g = torch.Generator(device=self.device).manual_seed(seed)
        x_start = self.model.get_embeds(ids)
        m = self.model.mean_embed
        region = mask if keep is None else mask * keep
        noise = torch.randn(x_start.shape, generator=g, device=self.device)
        if init == "noise":
            z = noise if m is None else noise + m
        else:
            y0 = self.model.get_embeds(self.source_start(ids, mask, keep))
            t = torch.full((ids.shape[0],), t_start, device=self.device, dtype=torch.long)
            z = q_sample(self.sched, y0, t, noise, mask, m)
        if clamping is None:
            clamping = sampler == "ancestral" and m is None
        clamp = dict(clamp=self.clamp_fn(region) if clamping else None, clamp_step=clamp_step,
                     clamp_first=clamp_first)
        denoise = self.denoiser(mask, keep)
        if sampler == "ancestral":
            sched = self.sched if t_start is None else DiscreteSchedule(self.sched.betas[:t_start + 1])
            sched = sched.respace(min(steps or T, sched.num_steps))
            _, z0 = ancestral_sample(denoise, sched, z, x_start, mask, m=m, variance=variance,
                                     denoise_rate=absorb_rate, generator=g, progress=progress, **clamp)
        elif sampler == "dpm":
            ns = NoiseScheduleVP(self.sched.alphas_cumprod)
            ts = None if t_start is None else (t_start + 1.0) / T
            _, z0 = dpm_solver_sample(denoise, ns, z, x_start, mask, m=m, steps=steps or 10,
                                      order=order, skip=skip, t_start=ts, progress=progress,
                                      final_call=final_call, absorb_rate=absorb_rate, sde=sde,
                                      generator=g, **clamp)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose ancestral or dpm")
        # rounding to tokens where it is read: the target region, not the source or the padding
        rows = region.bool()
        out = ids.clone()
        out[rows] = self.model.get_logits(z0[rows]).argmax(-1)
        if keep is None:
            return out
        pad = self.tokenizer.pad_id
        out = out.masked_fill(~keep, pad)
        return torch.cat([out, torch.full_like(full_ids[:, out.shape[1]:], pad)], 1)

    @torch.no_grad()
    def region_lengths(self, sources, references=None, margin=None, lengths="predicted", chunk=1024):
        """The length each input is decoded at: [CLS] x [SEP] plus, for a model with a length
        head, its predicted target region (what target_regions gives it); for other models the
        source alone, which is what tells such inputs apart. A list of ints, one per input."""
        out = []
        for s in range(0, len(sources), chunk):
            ids, mask = self.inputs(sources[s:s + chunk], None if references is None else references[s:s + chunk])
            if self.uses_regions(lengths):
                n = self.region_end(ids.to(self.device), mask.to(self.device), self.margin(margin), lengths).cpu()
            else:
                n = (1 - mask).sum(1)
            out += n.tolist()
        return out

    def margin(self, length_margin=None):
        """The positions after the predicted length a region gets: length_margin, or by default
        the margin the model was trained with (4 for models trained before margins existed)."""
        if length_margin is not None:
            return length_margin
        trained = self.args.length_margin
        return trained if trained >= 0 else 4

    @torch.no_grad()
    def predict_lengths(self, ids, mask):
        """Predicted number of target tokens [B] (the length head's most likely class)."""
        return self.model.length_logits(ids, mask).argmax(-1)

    def uses_regions(self, lengths):
        """Whether `lengths` cuts the target to a region: "predicted" and "longer" for a model
        with a length head, "source" for any; "full" (and the others, without a head) fills the
        whole sequence."""
        if lengths not in LENGTHS:
            raise ValueError(f"unknown lengths {lengths!r}; choose one of {', '.join(LENGTHS)}")
        return lengths == "source" or (lengths != "full" and self.model.cfg.length_head)

    def region_end(self, ids, mask, margin, lengths="predicted"):
        """Where each input's target region ends [B]: its source ([CLS] x [SEP]) + its target
        length + [SEP] + margin (not bounded by the sequence). The target length is the predicted
        one, the source's ("source", its tokens), or the longer of the two ("longer")."""
        src = (1 - mask).sum(1)
        n = src - 2 if lengths == "source" else self.predict_lengths(ids, mask)
        if lengths == "longer":
            n = torch.maximum(n, src - 2)
        return src + n + 1 + margin

    def target_regions(self, ids, mask, margin, lengths="predicted"):
        """Cut a batch to its target regions: (ids, mask, keep) with L the longest region; keep
        [B, L] is False past each example's region_end."""
        end = self.region_end(ids, mask, margin, lengths).clamp(max=ids.shape[1])
        Lb = int(end.max())
        keep = torch.arange(Lb, device=ids.device)[None, :] < end[:, None]
        return ids[:, :Lb], mask[:, :Lb], keep

    def detokenize(self, out, mask):
        """Token ids [B, L] -> the generated text of each row (its target region)."""
        rows = [row[m.bool()].tolist() for row, m in zip(out.cpu(), mask.cpu())]
        return self.tokenizer.decode_batch(rows)

    def settings(self, sampler=None, use_saved=True, **given):
        """The keyword arguments to decode with: `given` (those not None) over the settings saved
        with the checkpoint (decoding.json: those of `sampler`, or the best of all when sampler is
        None) over the defaults of sample_ids, whose sampler is "dpm"; a source start gets its
        default t_start here."""
        saved = None
        if use_saved and self.saved:
            saved = self.saved.get(sampler or "best")
        out = merge(saved, given, sampler)
        out.setdefault("sampler", "dpm")
        if out.get("init") == "source" and out.get("t_start") is None:
            out["t_start"] = default_source_t(self.args.diffusion_steps)  # named where it is shown
        return out

    def length_batches(self, sources, references=None, bsz=64, length_margin=None, lengths="predicted"):
        """Input indices in batches of up to bsz, in order of the length they are decoded at
        (region_lengths), so each batch is cut to little more than its inputs need."""
        region = self.region_lengths(sources, references, length_margin, lengths)
        order = sorted(range(len(sources)), key=lambda i: region[i])
        return [order[s:s + bsz] for s in range(0, len(order), bsz)]

    def generate(self, sources, sampler=None, steps=None, num_samples=1, seed=0, bsz=64, use_saved=True, **kw):
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
                for i, t in zip(index, self.detokenize(out, mask)):
                    texts[i] = t
            outs.append(texts)
        return outs[0] if num_samples == 1 else outs


def load_model(path, device="auto", use_ema=True, dtype=None, compile=False):
    return DiffuSeqModel(path, device, use_ema, dtype, compile)


def batch_seed(seed, batch_index):
    """The seed of one batch: the same whatever the number of processes."""
    return (seed * 1_000_003 + batch_index) % (2 ** 63)


def output_path(out_dir, model, split, seed, steps, init="noise", t_start=None):
    """<out_dir>/<run>_<checkpoint>/<split>.seed<S>.step<K>[.source<t>].jsonl"""
    if t_start is None:
        t_start = default_source_t(model.args.diffusion_steps)
    tag = f".source{t_start}" if init == "source" else ""
    return os.path.join(out_dir, model.name, f"{split}.seed{seed}.step{steps}{tag}.jsonl")


def decode_split(model, data_dir, split, out_dir, sampler="ancestral", steps=None, seeds=(0,),
                 bsz=64, proc=None, progress=True, max_examples=None, **kw):
    """Decode data_dir/<split>.jsonl with each seed; rank r takes batches r, r+W, ...; rank 0
    merges the shards in input order. Inputs are batched in order of the length they will be
    decoded at (source + predicted target region, see region_lengths), so a batch is cut to
    little more than its inputs need; the output keeps the input order. Returns the output paths
    and sentences/s."""
    proc = proc or dist.ProcessInfo(device=model.device)
    path = os.path.join(data_dir, f"{split}.jsonl")
    pairs = list(read_pairs(path))
    if max_examples:
        pairs = pairs[:max_examples]
    steps = steps or (model.args.diffusion_steps if sampler == "ancestral" else 10)
    batches = model.length_batches([p[0] for p in pairs], [p[1] for p in pairs], bsz, kw.get("length_margin"),
                                   kw.get("lengths", "predicted"))
    mine = list(enumerate(batches))[proc.rank::proc.world_size]
    paths, t0, n_done = [], time.time(), 0
    for seed in seeds:
        final = output_path(out_dir, model, split, seed, steps, kw.get("init", "noise"), kw.get("t_start"))
        os.makedirs(os.path.dirname(final), exist_ok=True)
        rows = {}
        bar = None
        if progress and proc.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=sum(len(index) for _, index in mine), desc=f"decode seed {seed}", unit="sent",
                       disable=None)
        for b, index in mine:
            src, ref = [pairs[i][0] for i in index], [pairs[i][1] for i in index]
            ids, mask = model.inputs(src, ref)
            out = model.sample_ids(ids, mask, sampler, steps, seed=batch_seed(seed, b), **kw)
            gen = model.detokenize(out, mask)
            # the user's strings verbatim; scoring normalises both sides itself (metrics.normalize)
            for i, s, r, g in zip(index, src, ref, gen):
                rows[i] = {"source": s, "reference": r, "recover": g}
            n_done += len(index)
            if bar is not None:
                bar.update(len(index))
        if bar is not None:
            bar.close()
        shard = f"{final}.rank{proc.rank}"
        with open(shard, "w") as f:
            json.dump(rows, f, ensure_ascii=False)
        dist.barrier()
        if proc.is_main:
            merged = {}
            for r in range(proc.world_size):
                with open(f"{final}.rank{r}") as f:
                    merged.update({int(k): v for k, v in json.load(f).items()})
                os.remove(f"{final}.rank{r}")
            tmp = final + ".tmp"
            with open(tmp, "w") as f:
                for i in sorted(merged):
                    f.write(json.dumps(merged[i], ensure_ascii=False) + "\n")
            os.replace(tmp, final)
        dist.barrier()
        paths.append(final)
    return paths, n_done / max(time.time() - t0, 1e-9)
