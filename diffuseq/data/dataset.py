"""
Data for DiffuSeq: jsonl pairs -> tokenized Arrow datasets -> padded batches.

A split is a file `data_dir/{split}.jsonl`, one JSON object per line with a source "src" and a
target "trg". Each pair becomes one model input, the concatenation

    z = [CLS] x [SEP] y [SEP]

of which only the y part (from `src_len` on, padding included) is noised and learned.
Tokenized splits are cached as memory-mapped Arrow files, so a large corpus never sits in a
Python list and is tokenized once.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..jsonl import DataError, JsonlReader, decode_line

CACHE_VERSION = 1  # bump when the cached layout changes
MIN_SEQ_LEN = 5  # [CLS] x1 [SEP] y1 [SEP]


# -----------------------------------------------------------------------------
# reading jsonl pairs (the reader itself, and DataError, are diffuseq/jsonl.py's)

class PairReader(JsonlReader):
    """Iterate (src, trg) over a jsonl file of training pairs (both non-empty strings)."""

    def __init__(self, path, skip_bad_lines=False):
        super().__init__(path, ("src", "trg"), nonempty=("src", "trg"), skip_bad_lines=skip_bad_lines)

    @property
    def n_pairs(self):
        return self.n_read

    def __iter__(self):
        for _, r in super().__iter__():
            yield r["src"], r["trg"]


def read_pairs(path, skip_bad_lines=False):
    """A PairReader over `path`: raises DataError at once if the folder or file is missing."""
    return PairReader(path, skip_bad_lines)


def read_inputs(path):
    """Inputs to decode: a list of (source, reference or None).

    A `.jsonl` file holds one {"src": ...} object per line, with an optional "trg" (the
    reference); any other file (or "-", standard input) one source per line, as plain text."""
    if path != "-" and path.endswith(".jsonl"):
        return [(r["src"], r["trg"]) for _, r in JsonlReader(path, ("src",), ("trg",), nonempty=("src",))]
    if path == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
        with open(path, "rb") as f:
            data, name = f.read(), path
    out = []
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = decode_line(raw, lineno)
        except ValueError as e:
            raise DataError(f"{name}:{lineno}: {e}") from None
        if text.strip():
            out.append((text.strip(), None))
    if not out:
        raise DataError(f"{name}: no input lines")
    return out


# -----------------------------------------------------------------------------
# tokenizing a split into an Arrow dataset

@dataclass
class SplitStats:
    n_pairs: int = 0  # rows in the dataset
    n_truncated: int = 0  # pairs cut to fit seq_len
    n_skipped: int = 0  # bad lines skipped (skip_bad_lines)
    from_cache: bool = False


LAYOUTS = ("ours", "original")


def make_input(x, y, seq_len, cls_id, sep_id, layout="ours"):
    """Source ids x, target ids y -> (z, src_len, truncated), len(z) <= seq_len, with the target
    part (the part that is noised) from src_len on.

    layout "ours": z = [CLS] x [SEP] y [SEP]. The source is cut first; it keeps at least one
    token, and only when the target alone does not fit is the target cut too (its final [SEP] is
    always kept).
    layout "original" (the original DiffuSeq's): z = [CLS] x [SEP] [SEP] [CLS] y [SEP], the
    target part starting at the second [CLS]. While [CLS] x and [CLS] y together exceed
    seq_len - 3, the longer loses its last token (both when they are equally long).
    """
    if layout == "original":
        src, trg = [cls_id] + list(x), [cls_id] + list(y)
        truncated = len(src) + len(trg) > seq_len - 3
        while len(src) + len(trg) > seq_len - 3:
            longer = len(src) - len(trg)
            if longer >= 0:
                src.pop()
            if longer <= 0:
                trg.pop()
        return src + [sep_id, sep_id] + trg + [sep_id], len(src) + 2, truncated
    if layout != "ours":
        raise ValueError(f"unknown layout {layout!r}; choose {' or '.join(LAYOUTS)}")
    truncated = len(x) + len(y) + 3 > seq_len
    if truncated:
        x = x[:max(1, seq_len - 3 - len(y))]
        y = y[:seq_len - 3 - len(x)]
    return [cls_id] + x + [sep_id] + y + [sep_id], len(x) + 2, truncated


def _tokenize(batch, tokenizer, seq_len, layout="ours"):
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    out = {"input_ids": [], "src_len": [], "length": [], "truncated": []}
    for x, y in zip(tokenizer.encode_batch(batch["src"]), tokenizer.encode_batch(batch["trg"])):
        z, src_len, truncated = make_input(x, y, seq_len, cls_id, sep_id, layout)
        out["input_ids"].append(z)
        out["src_len"].append(src_len)
        out["length"].append(len(z))
        out["truncated"].append(truncated)
    return out


def _writable_cache(cache_dir):
    try:
        os.makedirs(cache_dir, exist_ok=True)
        probe = os.path.join(cache_dir, f".probe-{uuid.uuid4().hex}")
        open(probe, "w").close()
        os.remove(probe)
        return cache_dir
    except OSError:
        fallback = os.path.join(tempfile.gettempdir(), "diffuseq-cache")
        warnings.warn(f"cache folder {cache_dir} is not writable; caching in {fallback}")
        os.makedirs(fallback, exist_ok=True)
        return fallback


def _cache_key(path, tokenizer, seq_len, skip_bad_lines, layout="ours", both_directions=False):
    st = os.stat(path)
    h = hashlib.sha256()
    parts = (CACHE_VERSION, os.path.abspath(path), st.st_size, st.st_mtime_ns, tokenizer.to_str(), seq_len,
             skip_bad_lines) + (() if layout == "ours" else (layout,))  # keys of "ours" stay as they were
    parts += ("both directions",) if both_directions else ()
    for part in parts:
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()[:20]


def load_split(data_dir, split, tokenizer, seq_len, cache_dir=None, skip_bad_lines=False, num_proc=1,
               layout="ours", both_directions=False):
    """Tokenize data_dir/{split}.jsonl once (cached) -> (datasets.Dataset, SplitStats).

    Columns: input_ids (unpadded z = [CLS] x [SEP] y [SEP], len <= seq_len), src_len (where y
    starts: tokens up to and including the first [SEP]) and length (= len(input_ids)).
    both_directions: each pair is followed by its reverse (trg -> src), so the split has twice
    the rows. The cache key covers the file (size, mtime), the tokenizer's JSON, seq_len, the
    layout (see make_input) and both_directions.
    """
    import datasets  # here, not at the top: decoding reads jsonl without it (a second saved at start-up)

    if seq_len < MIN_SEQ_LEN:
        raise DataError(f"--seq_len {seq_len} is too small: [CLS] x [SEP] y [SEP] needs at least "
                        f"{MIN_SEQ_LEN} tokens")
    path = os.path.join(data_dir, f"{split}.jsonl")
    pairs = read_pairs(path, skip_bad_lines=skip_bad_lines)
    if not sys.stderr.isatty():  # a log file gets the counts, not a flood of progress bars
        datasets.disable_progress_bars()
    cache_dir = _writable_cache(cache_dir or os.path.join(data_dir, ".cache"))
    key = _cache_key(path, tokenizer, seq_len, skip_bad_lines, layout, both_directions)
    final = os.path.join(cache_dir, f"{split}-{key}")
    stats_file = os.path.join(final, "diffuseq_stats.json")
    if os.path.isfile(stats_file):
        with open(stats_file) as f:
            stats = SplitStats(**json.load(f))
        stats.from_cache = True
        return datasets.load_from_disk(final), stats

    # build in a private folder next to the cache, then move it into place in one rename
    work = os.path.join(cache_dir, f"tmp-{key}-{uuid.uuid4().hex[:8]}")
    try:
        def rows():
            for src, trg in pairs:
                yield {"src": src, "trg": trg}
                if both_directions:
                    yield {"src": trg, "trg": src}
        features = datasets.Features({"src": datasets.Value("string"), "trg": datasets.Value("string")})
        try:
            raw = datasets.Dataset.from_generator(
                rows, features=features, cache_dir=os.path.join(work, "raw"), fingerprint=f"raw-{key}",
                split=datasets.NamedSplit(split))
        except datasets.exceptions.DatasetGenerationError as e:
            if isinstance(e.__cause__, DataError):
                raise e.__cause__ from None
            raise
        except ValueError:
            if pairs.n_pairs == 0:  # datasets refuses an empty split
                raise DataError(f"{path}: no pairs (skipped {pairs.n_skipped} bad lines)") from None
            raise
        ds = raw.map(
            _tokenize, batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
            fn_kwargs={"tokenizer": tokenizer, "seq_len": seq_len, "layout": layout}, remove_columns=["src", "trg"],
            new_fingerprint=f"tok-{key}", desc=f"tokenizing {split}",
            features=datasets.Features({
                "input_ids": datasets.Sequence(datasets.Value("int32")),
                "src_len": datasets.Value("int32"),
                "length": datasets.Value("int32"),
                "truncated": datasets.Value("bool"),
            }))
        n_truncated = int(np.sum(ds.with_format("arrow")["truncated"].to_numpy()))
        stats = SplitStats(n_pairs=len(ds), n_truncated=n_truncated, n_skipped=pairs.n_skipped)
        out = os.path.join(work, "out")
        ds.remove_columns("truncated").save_to_disk(out)
        with open(os.path.join(out, "diffuseq_stats.json"), "w") as f:
            json.dump(asdict(stats), f)
        del raw, ds
        try:
            os.rename(out, final)
        except OSError:  # another process (another rank) finished first: use its copy
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return datasets.load_from_disk(final), stats


# -----------------------------------------------------------------------------
# batches

def _batch_len(longest, seq_len, pad_to, margin=0):
    """The padded length of a batch whose longest row has `longest` tokens: seq_len, or with
    pad_to='longest' that row plus room for `margin` trailing pads (when margin >= 0), rounded up
    to a multiple of 8, at most seq_len."""
    if pad_to == "seq_len":
        return seq_len
    return min(seq_len, -(-(longest + max(margin, 0)) // 8) * 8)


def default_pad_to(margin, bucket=False):
    """How far a batch is padded when nobody says: to its longest row where padding beyond it
    changes no loss (a margin >= 0) or where bucketing made its rows alike, else to seq_len (the
    original's training, where every pad is a target)."""
    return "longest" if bucket or margin >= 0 else "seq_len"


def _pad(ids_flat, lengths, src_lens, L, pad_id):
    """Flat token ids of B rows -> input_ids, input_mask LongTensors [B, L] and length [B].

    The mask is 1 from src_len to L-1: y, its [SEP] and the padding after it, and 0 on
    [CLS] x [SEP]. `length` is each row's number of tokens before its padding; how many of the
    pads after it the model learns to produce is the trainer's choice (diffusion.target_region).
    """
    B = len(lengths)
    ids = np.full((B, L), pad_id, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(B), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    ids[rows, cols] = ids_flat
    mask = np.arange(L)[None, :] >= np.asarray(src_lens)[:, None]
    return {"input_ids": torch.from_numpy(ids), "input_mask": torch.from_numpy(mask.astype(np.int64)),
            "length": torch.from_numpy(np.asarray(lengths, dtype=np.int64))}


def collate(examples, seq_len, pad_id, pad_to="seq_len", margin=0):
    """List of {"input_ids", "src_len"} -> {"input_ids", "input_mask", "length"}, LongTensors.

    L = seq_len, or with pad_to='longest' the batch's longest plus `margin` rounded up to a
    multiple of 8 (at most seq_len).
    """
    lengths = np.array([len(e["input_ids"]) for e in examples], dtype=np.int64)
    L = _batch_len(int(lengths.max()), seq_len, pad_to, margin)
    if lengths.max() > L:
        raise ValueError(f"a sequence of length {lengths.max()} does not fit seq_len {seq_len}")
    flat = np.concatenate([np.asarray(e["input_ids"], dtype=np.int64) for e in examples])
    return _pad(flat, lengths, [e["src_len"] for e in examples], L, pad_id)


def _read_rows(dataset, indices):
    """Rows of the Arrow dataset -> (flat ids, lengths, src_lens) as numpy, without Python lists."""
    table = dataset.with_format("arrow")[np.asarray(indices).tolist()]
    col = table.column("input_ids").combine_chunks()
    flat = col.flatten().to_numpy().astype(np.int64)
    lengths = np.diff(col.offsets.to_numpy()).astype(np.int64)
    return flat, lengths, table.column("src_len").to_numpy()


def rank_slice(global_batch, world_size, rank):
    """(lo, hi): the part of a global batch that process `rank` of `world_size` trains on. The
    remainder of an uneven split goes one example each to the first ranks (850 over 8: two
    ranks of 107, six of 106), so any number of processes trains the same global batch."""
    base, extra = divmod(global_batch, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class BatchLoader:
    """Endless, deterministic training batches for one rank.

    The global batch at step s depends only on (seed, s): examples are read in the order of a
    permutation seeded by (seed, epoch), one epoch after the other as one stream, so a batch may
    straddle two epochs and every example is seen exactly once per epoch. Resuming at step s gives
    the batches an uninterrupted run would see.

    With bucket=True each epoch's permutation is cut into pools of 50 global batches, each pool is
    sorted by length and cut into batches, and the batches are shuffled; an epoch is then
    ceil(N / global_batch) steps, its last batch topped up with examples from the epoch's start.
    Batches are padded to their longest row plus room for `margin` trailing pads (pad_to='longest',
    the default with bucketing or with a margin >= 0: there padding beyond it changes no loss), or
    to seq_len (margin < 0, the original's training, where every pad is a target).

    Rank r gets the r-th contiguous chunk of the global batch (rank_slice: when the world size
    does not divide the batch, the first ranks get one example more) and `index` [B] with the
    chunk's positions in the global batch; all ranks pad to the same L.
    """

    POOL = 50  # global batches per bucketing pool

    def __init__(self, dataset, global_batch, rank=0, world_size=1, seed=0, seq_len=128, pad_id=0,
                 bucket=False, pin_memory=False, start_step=0, pad_to=None, margin=-1):
        if global_batch < world_size:
            raise ValueError(f"global batch {global_batch} is smaller than the {world_size} processes")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset, self.global_batch, self.seed = dataset, global_batch, seed
        self.seq_len, self.pad_id, self.bucket, self.margin = seq_len, pad_id, bucket, margin
        self.pad_to = pad_to or default_pad_to(margin, bucket)
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.start_step = start_step
        self.lo, self.hi = rank_slice(global_batch, world_size, rank)
        self.lengths = dataset.with_format("arrow")["length"].to_numpy().astype(np.int64)
        self.n = len(self.lengths)
        self.steps_per_epoch = -(-self.n // global_batch) if bucket else self.n / global_batch
        self._orders = {}

    def _order(self, epoch):
        """The example order of one epoch, cached for the two latest epochs."""
        if epoch not in self._orders:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            if self.bucket:
                perm = self._bucket(perm, np.random.default_rng([self.seed, epoch, 1]))
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = perm
        return self._orders[epoch]

    def _bucket(self, perm, rng):
        G = self.global_batch
        n_batches = -(-self.n // G)
        perm = np.resize(perm, n_batches * G)  # top up the last batch from the epoch's start
        pool = self.POOL * G
        for start in range(0, len(perm), pool):
            chunk = perm[start:start + pool]
            perm[start:start + pool] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
        batches = perm.reshape(n_batches, G)
        return batches[rng.permutation(n_batches)].reshape(-1)

    def global_indices(self, step):
        """Dataset indices of the whole global batch at `step`, [global_batch]."""
        G = self.global_batch
        if self.bucket:
            epoch, b = divmod(step, self.steps_per_epoch)
            return self._order(epoch)[b * G:(b + 1) * G]
        pos = np.arange(step * G, (step + 1) * G)
        epochs = pos // self.n
        if epochs[0] == epochs[-1]:
            return self._order(int(epochs[0]))[pos % self.n]
        return np.array([self._order(int(e))[p] for e, p in zip(epochs, pos % self.n)])

    def batch_at(self, step):
        """{"input_ids", "input_mask": LongTensor [B, L], "length", "index": LongTensor [B]} for
        this rank."""
        idx = self.global_indices(step)
        L = _batch_len(int(self.lengths[idx].max()), self.seq_len, self.pad_to, self.margin)
        flat, lengths, src_lens = _read_rows(self.dataset, idx[self.lo:self.hi])
        batch = _pad(flat, lengths, src_lens, L, self.pad_id)
        batch["index"] = torch.arange(self.lo, self.hi)
        if self.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1


def make_eval_batches(dataset, batch_size, seq_len, pad_id, pad_to="seq_len", margin=0):
    """Every example once, in order: dicts of input_ids, input_mask [B, L] and length [B] (the
    last B may be smaller)."""
    for start in range(0, len(dataset), batch_size):
        flat, lengths, src_lens = _read_rows(dataset, range(start, min(start + batch_size, len(dataset))))
        yield _pad(flat, lengths, src_lens, _batch_len(int(lengths.max()), seq_len, pad_to, margin), pad_id)
