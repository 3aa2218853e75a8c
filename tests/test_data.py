import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuseq.data.dataset import (make_input, rank_slice, BatchLoader, DataError, collate, load_split, make_eval_batches,
                                   read_pairs)
from diffuseq.tokenizer import SPECIAL_TOKENS, load_bert_vocab, train_tokenizer

LETTERS = list("abcdefghijklmnopqrstuvwxyz")
QQP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "qqp_small"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """One token per letter: "a" is id 5, "b" 6, ..."""
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + LETTERS) + "\n")
    return load_bert_vocab(str(folder))


def ids(text):
    return [5 + LETTERS.index(c) for c in text.split()]


def write(folder, lines, name="train.jsonl"):
    """lines: dicts (written as JSON) or raw bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return str(folder)


GOOD = {"src": "a b", "trg": "c d"}
BAD_LINES = [
    (b'{"src": "a", "trg": ', "not valid JSON"),
    (b'["a", "b"]', "expected a JSON object"),
    (b'{"trg": "a"}', 'missing "src"'),
    (b'{"src": "a", "trg": 7}', '"trg" must be a string, got int'),
    (b'{"src": "a", "trg": null}', '"trg" must be a string'),
    (b'{"src": "  ", "trg": "a"}', '"src" is empty'),
    (b'{"src": "a", "trg": ""}', '"trg" is empty'),
    (b'{"src": "caf\xe9", "trg": "a"}', "invalid UTF-8"),
]


@pytest.mark.parametrize("bad,problem", BAD_LINES)
def test_bad_line_names_file_and_line(tmp_path, bad, problem):
    data = write(tmp_path / "d", [GOOD, b"", bad, GOOD])  # the blank line still counts as line 2
    path = os.path.join(data, "train.jsonl")
    with pytest.raises(DataError) as e:
        list(read_pairs(path))
    assert str(e.value).startswith(f"{path}:3: ") and problem in str(e.value)


def test_bad_line_through_load_split(tmp_path, tok):
    data = write(tmp_path / "d", [GOOD, b'{"src": "a", "trg": 7}'])
    with pytest.raises(DataError, match=r"train\.jsonl:2: .*must be a string"):
        load_split(data, "train", tok, 16, cache_dir=str(tmp_path / "cache"))


def test_skip_bad_lines_counts(tmp_path, tok):
    data = write(tmp_path / "d", [GOOD] + [bad for bad, _ in BAD_LINES] + [b"   ", {"src": "e", "trg": "f"}])
    pairs = read_pairs(os.path.join(data, "train.jsonl"), skip_bad_lines=True)
    assert list(pairs) == [("a b", "c d"), ("e", "f")]
    assert (pairs.n_pairs, pairs.n_skipped) == (2, len(BAD_LINES))
    ds, stats = load_split(data, "train", tok, 16, cache_dir=str(tmp_path / "c"), skip_bad_lines=True)
    assert len(ds) == stats.n_pairs == 2 and stats.n_skipped == len(BAD_LINES)


def test_empty_split(tmp_path, tok):
    data = write(tmp_path / "d", [b"", b'{"src": 1}'])
    with pytest.raises(DataError, match=r"train\.jsonl: no pairs \(skipped 1 bad lines\)"):
        load_split(data, "train", tok, 16, cache_dir=str(tmp_path / "c"), skip_bad_lines=True)


def test_missing_folder_and_split(tmp_path, tok):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_split(str(tmp_path / "nowhere"), "train", tok, 16)
    data = write(tmp_path / "d", [GOOD], "valid.jsonl")
    write(tmp_path / "d", [GOOD], "test.jsonl")
    with pytest.raises(DataError) as e:
        load_split(data, "train", tok, 16)
    msg = str(e.value)
    assert "train.jsonl" in msg and "no such file" in msg and "test, valid" in msg


def test_seq_len_too_small(tmp_path, tok):
    data = write(tmp_path / "d", [GOOD])
    with pytest.raises(DataError, match="--seq_len 4 is too small"):
        load_split(data, "train", tok, 4)
    ds, _ = load_split(data, "train", tok, 5, cache_dir=str(tmp_path / "c"))
    assert ds[0]["input_ids"] == [2] + ids("a") + [3] + ids("c") + [3]


def test_layout_and_truncation(tmp_path, tok):
    data = write(tmp_path / "d", [
        {"src": "a b c", "trg": "d e"},  # 8 tokens: fits exactly
        {"src": "a b c d e f", "trg": "g h"},  # source cut to 3
        {"src": "a b c", "trg": "d e f g h i"},  # source cut to 1, target to 4
    ])
    ds, stats = load_split(data, "train", tok, 8, cache_dir=str(tmp_path / "c"))
    CLS, SEP = tok.cls_id, tok.sep_id
    expected = [
        ([CLS] + ids("a b c") + [SEP] + ids("d e") + [SEP], 5),
        ([CLS] + ids("a b c") + [SEP] + ids("g h") + [SEP], 5),
        ([CLS] + ids("a") + [SEP] + ids("d e f g") + [SEP], 3),
    ]
    assert [(r["input_ids"], r["src_len"]) for r in ds] == expected
    assert list(ds["length"]) == [8, 8, 8]
    assert (stats.n_pairs, stats.n_truncated, stats.n_skipped) == (3, 2, 0)


def test_both_directions_adds_each_pair_reversed_under_its_own_cache_key(tmp_path, tok):
    data = write(tmp_path / "d", [{"src": "a b c", "trg": "d e"}, {"src": "f", "trg": "g h"}])
    cache = str(tmp_path / "c")
    CLS, SEP = tok.cls_id, tok.sep_id
    one, _ = load_split(data, "train", tok, 16, cache_dir=cache)
    both, stats = load_split(data, "train", tok, 16, cache_dir=cache, both_directions=True)
    assert [r["input_ids"] for r in both] == [
        [CLS] + ids("a b c") + [SEP] + ids("d e") + [SEP], [CLS] + ids("d e") + [SEP] + ids("a b c") + [SEP],
        [CLS] + ids("f") + [SEP] + ids("g h") + [SEP], [CLS] + ids("g h") + [SEP] + ids("f") + [SEP]]
    assert [r["src_len"] for r in both] == [5, 4, 3, 4] and stats.n_pairs == 4
    assert [r["input_ids"] for r in one] == [r["input_ids"] for r in both][::2]  # not read from each other's cache
    again, _ = load_split(data, "train", tok, 16, cache_dir=cache)
    assert len(again) == 2


def test_collate_mask_covers_target_and_padding(tmp_path, tok):
    data = write(tmp_path / "d", [{"src": "a b c", "trg": "d"}, {"src": "e", "trg": "f g h"}])
    ds, _ = load_split(data, "train", tok, 12, cache_dir=str(tmp_path / "c"))
    batch = collate(list(ds), seq_len=12, pad_id=tok.pad_id)
    assert batch["input_ids"].dtype == batch["input_mask"].dtype == torch.long
    assert batch["input_ids"].tolist() == [
        [2] + ids("a b c") + [3] + ids("d") + [3] + [0] * 5,
        [2] + ids("e") + [3] + ids("f g h") + [3] + [0] * 5,
    ]
    assert batch["input_mask"].tolist() == [[0] * 5 + [1] * 7, [0] * 3 + [1] * 9]
    short = collate(list(ds), seq_len=12, pad_id=tok.pad_id, pad_to="longest")
    assert short["input_ids"].shape == (2, 8)  # longest 7, rounded up to 8
    assert torch.equal(short["input_mask"], batch["input_mask"][:, :8])
    assert collate(list(ds), seq_len=7, pad_id=0, pad_to="longest")["input_ids"].shape == (2, 7)  # capped


def test_cache_is_reused(tmp_path, tok, monkeypatch):
    data = write(tmp_path / "d", [{"src": " ".join(LETTERS[: i % 9 + 1]), "trg": "z y"} for i in range(50)])
    calls = []
    real = tok.encode_batch
    monkeypatch.setattr(tok, "encode_batch", lambda texts: calls.append(1) or real(texts))
    ds1, s1 = load_split(data, "train", tok, 16)  # default cache: data_dir/.cache
    assert calls and not s1.from_cache and os.listdir(os.path.join(data, ".cache"))
    calls.clear()
    ds2, s2 = load_split(data, "train", tok, 16)
    assert not calls and s2.from_cache and s2.n_pairs == s1.n_pairs == 50
    assert ds2["input_ids"][:] == ds1["input_ids"][:]
    load_split(data, "train", tok, 12)  # another seq_len is another cache entry
    assert calls
    calls.clear()
    write(tmp_path / "d", [GOOD])  # a changed file is tokenized again
    ds3, s3 = load_split(data, "train", tok, 16)
    assert calls and len(ds3) == 1 and not s3.from_cache


def test_unwritable_cache_falls_back(tmp_path, tok):
    data = write(tmp_path / "d", [GOOD])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="not writable"):
        ds, _ = load_split(data, "train", tok, 16, cache_dir=str(blocker / "cache"))
    assert len(ds) == 1


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tok):
    """40 short pairs (length 5..8) and 40 long ones (length 20..32), interleaved."""
    rows = []
    for i in range(40):
        rows.append({"src": " ".join(LETTERS[: i % 3 + 1]), "trg": "x"})
        rows.append({"src": " ".join(LETTERS[: 14 + i % 3]), "trg": " ".join(LETTERS[: 3 + i % 12])})
    folder = tmp_path_factory.mktemp("mixed")
    ds, _ = load_split(write(folder, rows), "train", tok, 32)
    return ds


def test_loader_is_deterministic(mixed):
    a, b = BatchLoader(mixed, 16, seed=1, seq_len=32), BatchLoader(mixed, 16, seed=1, seq_len=32)
    c = BatchLoader(mixed, 16, seed=2, seq_len=32)
    for s in (0, 3, 4, 11):  # step 4 straddles the first epoch boundary (80 = 5 * 16)
        assert torch.equal(a.batch_at(s)["input_ids"], b.batch_at(s)["input_ids"])
    assert not torch.equal(a.batch_at(0)["input_ids"], c.batch_at(0)["input_ids"])
    resumed = iter(BatchLoader(mixed, 16, seed=1, seq_len=32, start_step=7))
    for s in (7, 8, 9):
        assert torch.equal(next(resumed)["input_ids"], a.batch_at(s)["input_ids"])
    # jumping back and forth gives the same batches
    assert torch.equal(a.batch_at(2)["input_ids"], BatchLoader(mixed, 16, seed=1, seq_len=32).batch_at(2)["input_ids"])


def test_loader_rows_are_dataset_rows(mixed):
    loader = BatchLoader(mixed, 8, seed=0, seq_len=32)
    idx = loader.global_indices(3)
    batch = loader.batch_at(3)
    expected = collate([mixed[int(i)] for i in idx], seq_len=32, pad_id=0)
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["input_mask"], expected["input_mask"])
    assert batch["index"].tolist() == list(range(8))


@pytest.mark.parametrize("pad_to", ["seq_len", "longest"])
def test_ranks_split_the_global_batch(mixed, pad_to):
    whole = BatchLoader(mixed, 12, seed=5, seq_len=32, pad_to=pad_to)
    ranks = [BatchLoader(mixed, 12, rank=r, world_size=2, seed=5, seq_len=32, pad_to=pad_to) for r in range(2)]
    for s in (0, 6, 13):
        full, parts = whole.batch_at(s), [r.batch_at(s) for r in ranks]
        for key in ("input_ids", "input_mask", "index"):
            assert torch.equal(torch.cat([p[key] for p in parts]), full[key])
        assert parts[1]["index"].tolist() == list(range(6, 12))
    with pytest.raises(ValueError, match="smaller than the 13 processes"):
        BatchLoader(mixed, 12, world_size=13)


@pytest.mark.parametrize("G,W", [(850, 8), (850, 16), (8192, 8), (8192, 16), (12, 5), (7, 7)])
def test_uneven_rank_slices_tile_the_global_batch(G, W):
    """Any number of processes covers the global batch exactly once, in order, each process's
    share within one example of every other's (850 over 8: 107, 107, 106 x 6)."""
    parts = [rank_slice(G, W, r) for r in range(W)]
    assert parts[0][0] == 0 and parts[-1][1] == G
    assert all(hi == lo for (_, hi), (lo, _) in zip(parts, parts[1:]))
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == G
    assert sizes == sorted(sizes, reverse=True)


def test_uneven_ranks_split_the_global_batch(mixed):
    whole = BatchLoader(mixed, 12, seed=5, seq_len=32)
    ranks = [BatchLoader(mixed, 12, rank=r, world_size=5, seed=5, seq_len=32) for r in range(5)]
    for s in (0, 7):
        parts = [r.batch_at(s) for r in ranks]
        assert [len(p["index"]) for p in parts] == [3, 3, 2, 2, 2]
        assert torch.equal(torch.cat([p["input_ids"] for p in parts]), whole.batch_at(s)["input_ids"])


def test_every_example_once_per_epoch(mixed):
    n = len(mixed)
    loader = BatchLoader(mixed, 12, seed=3, seq_len=32)  # 80 is not a multiple of 12
    stream = np.concatenate([loader.global_indices(s) for s in range(20)])  # 240 = 3 epochs
    for e in range(3):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert not np.array_equal(stream[:n], stream[n:2 * n])  # a new order each epoch


def test_bucketing_pads_less(mixed):
    n, G = len(mixed), 8
    plain = BatchLoader(mixed, G, seed=0, seq_len=32, pad_to="longest")
    bucket = BatchLoader(mixed, G, seed=0, seq_len=32, bucket=True)
    steps = range(n // G)
    L_plain = [plain.batch_at(s)["input_ids"].shape[1] for s in steps]
    L_bucket = [bucket.batch_at(s)["input_ids"].shape[1] for s in steps]
    assert np.mean(L_bucket) < np.mean(L_plain) - 5
    assert min(L_bucket) == 8
    assert L_bucket != sorted(L_bucket)  # batches are shuffled, not served short to long
    assert sorted(np.concatenate([bucket.global_indices(s) for s in steps])) == list(range(n))
    assert torch.equal(bucket.batch_at(4)["input_ids"],
                       BatchLoader(mixed, G, seed=0, seq_len=32, bucket=True).batch_at(4)["input_ids"])
    # an epoch of 80 rows in batches of 24: 4 steps, the last topped up from the epoch's start
    odd = BatchLoader(mixed, 24, seed=0, seq_len=32, bucket=True)
    assert set(np.concatenate([odd.global_indices(s) for s in range(4)])) == set(range(n))


def test_eval_batches_in_order(mixed):
    batches = list(make_eval_batches(mixed, 32, seq_len=32, pad_id=0))
    assert [b["input_ids"].shape for b in batches] == [(32, 32), (32, 32), (16, 32)]
    everything = collate(list(mixed), seq_len=32, pad_id=0)
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), everything["input_ids"])
    assert torch.equal(torch.cat([b["input_mask"] for b in batches]), everything["input_mask"])


@pytest.mark.skipif(not QQP.is_dir(), reason="qqp_small is not available")
def test_qqp_small(tmp_path):
    def n_lines(split):
        return sum(1 for line in open(QQP / f"{split}.jsonl", "rb") if line.strip())
    texts = (t for src, trg in read_pairs(str(QQP / "train.jsonl")) for t in (src, trg))
    tok = train_tokenizer(texts, vocab_size=2000)
    for split in ("train", "valid"):
        ds, stats = load_split(str(QQP), split, tok, 32, cache_dir=str(tmp_path))
        assert len(ds) == stats.n_pairs == n_lines(split) and stats.n_skipped == 0
        assert 0 < stats.n_truncated < stats.n_pairs
        lengths = np.asarray(ds["length"][:])
        assert lengths.max() <= 32 and lengths.min() >= 5
    batch = BatchLoader(ds, 16, seq_len=32).batch_at(0)
    assert batch["input_ids"].shape == (16, 32) and (batch["input_ids"][:, 0] == tok.cls_id).all()


def test_a_split_is_built_under_its_own_name_and_quietly_off_a_terminal(tmp_path, tok, capfd):
    """Loading valid.jsonl names the split "valid" (no "Generating train split" label), and with
    stderr not a terminal no progress bar is printed."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "valid.jsonl").write_text(json.dumps({"src": "a b c", "trg": "d e"}) + "\n")
    ds, _ = load_split(str(data), "valid", tok, 16, cache_dir=str(tmp_path / "c"))
    assert str(ds.split) == "valid"
    err = capfd.readouterr().err
    assert "Generating" not in err and "tokenizing" not in err and "%|" not in err


def _original_layout(x, y, L, cls=1, sep=2):
    """The original DiffuSeq's rule as its data code states it, spelled out independently."""
    src, trg = [cls] + x, [cls] + y
    while len(src) + len(trg) > L - 3:
        if len(src) > len(trg):
            src = src[:-1]
        elif len(src) < len(trg):
            trg = trg[:-1]
        else:
            src, trg = src[:-1], trg[:-1]
    ids = src + [sep] + [sep] + trg + [sep]
    return ids, [0] * (len(src) + 2) + [1] * (len(trg) + 1)


@pytest.mark.parametrize("nx,ny,L", [(3, 2, 128), (10, 2, 12), (5, 5, 12), (2, 30, 16), (7, 6, 14), (0, 0, 5)])
def test_original_layout_and_truncation(nx, ny, L):
    x, y = list(range(10, 10 + nx)), list(range(50, 50 + ny))
    ids, mask = _original_layout(x, y, L)
    z, src_len, truncated = make_input(x, y, L, 1, 2, layout="original")
    assert z == ids and [0] * src_len + [1] * (len(z) - src_len) == mask
    assert len(z) <= L and truncated == (nx + ny + 5 > L)
    assert z[src_len] == 1 and z[src_len - 2:src_len] == [2, 2]  # the target part begins with [CLS]
