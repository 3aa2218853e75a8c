"""Decoding files of inputs: what `run_decode.py`, `run_decode_solver.py` and the scripts call.

`decode_file` decodes every input of a file (a split's jsonl, with or without references, or
plain text, one source per line), sharded over processes, and writes one JSON line per input in
input order; `decode_split` does so for <data_dir>/<split>.jsonl. The model side (loading a
checkpoint, sampling, the length rule) is diffuseq.pipeline.DiffuSeq.
"""
import json
import os
import time

from . import dist
from .data.dataset import read_inputs
from .pipeline import DiffuSeq, batch_seed, default_source_t
from .family import get_sampler


def load_model(path, device="auto", use_ema=True, dtype=None, compile=False):
    """DiffuSeq.from_pretrained: a checkpoint or run folder, ready to decode."""
    return DiffuSeq.from_pretrained(path, device, use_ema, dtype, compile)


def output_path(out_dir, model, split, seed, steps, init="noise", t_start=None, edits=1, length_beam=1,
                settings=None):
    """<out_dir>/<run>_<checkpoint>/<split>.seed<S>.step<K>[.source<t>[.edits<E>]][.lengths<N>][family].jsonl
    (split: the input file's name without its extension; [family]: what the model's family adds
    for `settings`, e.g. a masked model's sampler, .topk)"""
    if t_start is None:
        t_start = default_source_t(model.args.diffusion_steps)
    tag = f".source{t_start}" + (f".edits{edits}" if edits > 1 else "") if init == "source" else ""
    tag += f".lengths{length_beam}" if length_beam > 1 else ""
    tag += model.family.output_tag(settings or {})
    return os.path.join(out_dir, model.name, f"{split}.seed{seed}.step{steps}{tag}.jsonl")


def decode_split(model, data_dir, split, out_dir, sampler=None, steps=None, seeds=(0,), **kw):
    """decode_file of <data_dir>/<split>.jsonl."""
    return decode_file(model, os.path.join(data_dir, f"{split}.jsonl"), out_dir, sampler, steps, seeds, **kw)


def decode_inputs(model, inputs, seed, batches, sampler, steps, bar=None, cleanup="cut", **kw):
    """{index: output row} of the inputs in `batches` (enumerated batch index, input indices)."""
    rows = {}
    for b, index in batches:
        src, ref = [inputs[i][0] for i in index], [inputs[i][1] for i in index]
        laid = all(r is not None for r in ref)
        ids, mask = model.inputs(src, ref if laid else None)
        out = model.sample_ids(ids, mask, sampler, steps, seed=batch_seed(seed, b), **kw)
        if laid and cleanup == "original":
            # as the original writes it: the target as laid (cut to seq_len with the source) and decoded
            ref = model.layout.laid_references(src, ref, cleanup)
        # otherwise the user's strings verbatim; scoring normalises both sides itself (metrics.normalize)
        for i, s, r, g in zip(index, src, ref, model.detokenize(out, mask, cleanup)):
            rows[i] = {"source": s, "recover": g} if r is None else {"source": s, "reference": r, "recover": g}
        if bar is not None:
            bar.update(len(index))
    return rows


def decode_file(model, path, out_dir, sampler=None, steps=None, seeds=(0,), bsz=64, proc=None,
                progress=True, max_examples=None, **kw):
    """Decode every input of `path` (see data.dataset.read_inputs) with each seed; rank r takes
    batches r, r+W, ...; rank 0 merges the shards in input order. Inputs are batched in order of
    the length they will be decoded at (region_lengths), so a batch is cut to little more than
    its inputs need; the output keeps the input order. An input without a reference gets a row
    without "reference". Returns the output paths and sentences/s."""
    proc = proc or dist.ProcessInfo(device=model.device)
    inputs = read_inputs(path)
    if max_examples:
        inputs = inputs[:max_examples]
    sampler = sampler or model.family.default_sampler()
    steps = steps or get_sampler(sampler).steps(model.args.diffusion_steps)
    refs = [r for _, r in inputs]
    batches = model.length_batches([s for s, _ in inputs], refs if None not in refs else None, bsz,
                                   kw.get("length_margin"), kw.get("lengths", "predicted"))
    mine = list(enumerate(batches))[proc.rank::proc.world_size]
    name = os.path.splitext(os.path.basename(path))[0]
    paths, t0, n_done = [], time.time(), 0
    for seed in seeds:
        final = output_path(out_dir, model, name, seed, steps, kw.get("init", "noise"), kw.get("t_start"),
                            kw.get("edits") or 1, kw.get("length_beam") or 1, dict(kw, sampler=sampler))
        os.makedirs(os.path.dirname(final), exist_ok=True)
        bar = None
        if progress and proc.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=sum(len(index) for _, index in mine), desc=f"decode seed {seed}", unit="sent",
                       disable=None)
        rows = decode_inputs(model, inputs, seed, mine, sampler, steps, bar, **kw)
        n_done += len(rows)
        if bar is not None:
            bar.close()
        write_rows(final, rows, proc)
        paths.append(final)
    return paths, n_done / max(time.time() - t0, 1e-9)


def write_mbr(paths):
    """The minimum-Bayes-risk pick among output files of the same inputs (several seeds of one
    setting): for each input, the row whose output has the highest mean sentence BLEU against the
    other files' outputs (metrics.mbr_select, on normalised texts). Written whole beside the first
    file, with .mbr<N> in place of its .seed<S>; returns that path."""
    from .metrics import mbr_select, normalize
    files = []
    for path in paths:
        with open(path) as f:
            files.append([json.loads(line) for line in f])
    picks = mbr_select([[normalize(f[i]["recover"]) for f in files] for i in range(len(files[0]))])
    folder, name = os.path.split(paths[0])
    split, rest = name.split(".seed", 1)
    final = os.path.join(folder, f"{split}.mbr{len(paths)}.{rest.split('.', 1)[1]}")
    with open(final + ".tmp", "w") as f:
        for i, j in enumerate(picks):
            f.write(json.dumps(files[j][i], ensure_ascii=False) + "\n")
    os.replace(final + ".tmp", final)
    return final


def write_rows(final, rows, proc):
    """Each process's rows to a shard; rank 0 merges them in input order into `final`, written
    whole or not at all (a temporary file renamed)."""
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
