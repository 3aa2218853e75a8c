"""Metrics against values worked out by hand, the loader's errors, and the command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffuseq import metrics
from diffuseq.metrics import MetricsError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "eval_seq2seq.py"

S1 = "the cat sat on the mat today"
S2 = "a dog ran to the big red ball"


# ----------------------------------------------------------------------------- quality

def test_bleu_of_identical_text_is_100():
    assert metrics.corpus_bleu([S1, S2], [S1, S2]) == pytest.approx(100.0)
    assert metrics.sentence_bleu_avg([S1, S2], [S1, S2]) == pytest.approx(100.0)


def test_sentence_bleu_of_disjoint_text_is_0():
    assert metrics.sentence_bleu_avg(["x y z w v"], [S1]) == 0.0
    assert metrics.sentence_bleu_avg([""], [S1]) == 0.0


def test_bleu_is_averaged_over_sentences():
    # one perfect sentence (100) and one with nothing in common (0)
    assert metrics.sentence_bleu_avg([S1, "x y z w v"], [S1, S2]) == pytest.approx(50.0)


def test_rouge_l_known_lcs():
    # hyp: the cat sat down (4 tokens); ref: the big cat lay down today (6 tokens)
    # LCS = "the cat down" = 3, so P = 3/4, R = 3/6, F1 = 2PR/(P+R) = (3/4)/(5/4) = 3/5
    hyp, ref = "the cat sat down", "the big cat lay down today"
    assert metrics.rouge_l([hyp], [ref]) == pytest.approx(60.0)
    # mean with an exact match (F1 = 1): (0.6 + 1) / 2
    assert metrics.rouge_l([hyp, S1], [ref, S1]) == pytest.approx(80.0)


def test_avg_len_counts_whitespace_tokens():
    assert metrics.avg_len(["a b c", "a  b\tc d e"]) == pytest.approx(4.0)


def test_mismatched_lengths_raise():
    with pytest.raises(MetricsError):
        metrics.corpus_bleu([S1], [S1, S2])


# ----------------------------------------------------------------------------- diversity

def test_dist1_is_intra_sentence():
    # "a a b": 2 distinct of 3 unigrams; "a b c": 3 of 3 -> mean (2/3 + 1) / 2 = 5/6
    assert metrics.dist_n(["a a b"]) == pytest.approx(100 * 2 / 3)
    assert metrics.dist_n(["a a b", "a b c"]) == pytest.approx(100 * 5 / 6)
    # bigrams of "a b a b": ab, ba, ab -> 2 distinct of 3
    assert metrics.dist_n(["a b a b"], n=2) == pytest.approx(100 * 2 / 3)


def test_self_bleu_of_identical_candidates_is_100():
    assert metrics.self_bleu([[S1, S1, S1], [S2, S2]]) == pytest.approx(100.0)


def test_self_bleu_of_disjoint_candidates_is_0():
    assert metrics.self_bleu([["a b c d e", "f g h i j"]]) == 0.0


def test_self_bleu_needs_two_candidates():
    with pytest.raises(MetricsError):
        metrics.self_bleu([[S1]])


def test_div4_hand_computed():
    # input 1: 4-grams (a b c d), (b c d e) and (a b c d), (b c d f): 3 distinct of 4 -> 3/4
    # input 2: (x y z w) twice: 1 distinct of 2 -> 1/2.  Mean over inputs: 5/8
    cands = [["a b c d e", "a b c d f"], ["x y z w", "x y z w"]]
    assert metrics.div_n(cands, n=4) == pytest.approx(62.5)


# ----------------------------------------------------------------------------- MBR

def test_mbr_picks_the_consensus_candidate():
    # three variants of one sentence and an outlier; the middle variant differs from each of the
    # other two in one word, while those two differ from each other in two, so it is the consensus
    outlier = "completely unrelated words appear here now again"
    centre = "the cat sat on the mat today"
    variants = ["the cat sat on the mat yesterday", centre, "a cat sat on the mat today"]
    assert metrics.mbr_select([variants + [outlier]]) == [1]
    assert metrics.mbr_select([[outlier] + variants]) == [2]
    assert metrics.mbr_select([[centre] + variants[::2] + [outlier]]) == [0]


def test_mbr_ties_go_to_lowest_index():
    assert metrics.mbr_select([[S1, S1, S1], [S2]]) == [0, 0]


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_single_candidate():
    out = metrics.evaluate([[S1], [S2]], [S1, S2])
    assert set(out) == {"bleu", "sentence_bleu", "rouge_l", "dist1", "avg_len"}
    assert out["bleu"] == pytest.approx(100.0)
    assert out["rouge_l"] == pytest.approx(100.0)
    assert out["avg_len"] == pytest.approx(7.5)  # 7 and 8 tokens


def test_evaluate_several_candidates_scores_the_mbr_pick():
    outlier = "x y z w v u t"
    out = metrics.evaluate([[outlier, S1, S1], [S2, S2, outlier]], [S1, S2])
    assert out["bleu"] == pytest.approx(100.0)  # MBR avoids the outliers
    # 4 of the 6 candidates match their reference exactly, 2 score 0
    assert out["sentence_bleu_mean_candidate"] == pytest.approx(100 * 4 / 6)
    assert {"self_bleu", "div4"} <= set(out)
    first = metrics.evaluate([[outlier, S1, S1], [S2, S2, outlier]], [S1, S2], mbr=False)
    assert first["sentence_bleu"] == pytest.approx(50.0)


# ----------------------------------------------------------------------------- BERTScore

def test_bertscore_missing_model_path(tmp_path):
    with pytest.raises(MetricsError, match="does not exist"):
        metrics.bertscore([S1], [S1], tmp_path / "nowhere")


def test_bertscore_missing_packages(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` fail
    with pytest.raises(MetricsError, match="pip install"):
        metrics.bertscore([S1], [S1], tmp_path)


# ----------------------------------------------------------------------------- loader

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(recovers, sources=("src one", "src two", "src three")):
    refs = ("ref one", "ref two", "ref three")
    return [{"source": s, "reference": r, "recover": h} for s, r, h in zip(sources, refs, recovers)]


def test_load_folder_gives_candidates_per_input(tmp_path):
    write_jsonl(tmp_path / "test.seed1.step5.jsonl", rows(["a1", "b1", "c1"]))
    write_jsonl(tmp_path / "test.seed2.step5.jsonl", rows(["a2", "b2", "c2"]))
    (tmp_path / "notes.txt").write_text("not a decoding file")
    sources, refs, cands = metrics.load_outputs(tmp_path)
    assert sources == ["src one", "src two", "src three"]
    assert refs == ["ref one", "ref two", "ref three"]
    assert cands == [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]]


def test_load_bad_json_names_file_and_line(tmp_path):
    f = tmp_path / "out.jsonl"
    f.write_text(json.dumps(rows(["a"])[0]) + "\n{not json\n")
    with pytest.raises(MetricsError) as e:
        metrics.load_outputs(f)
    assert "out.jsonl" in str(e.value) and "out.jsonl:2: not valid JSON" in str(e.value)


def test_load_missing_field_names_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "out.jsonl", [{"source": "s", "reference": "r"}])
    with pytest.raises(MetricsError, match=r"out\.jsonl:1: missing \"recover\""):
        metrics.load_outputs(f)


def test_load_empty_and_missing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(MetricsError, match="empty"):
        metrics.load_outputs(tmp_path / "empty.jsonl")
    with pytest.raises(MetricsError, match="does not exist"):
        metrics.load_outputs(tmp_path / "absent.jsonl")


def test_load_files_with_different_lengths(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows(["1", "2", "3"]))
    write_jsonl(tmp_path / "b.jsonl", rows(["1", "2"]))
    with pytest.raises(MetricsError) as e:
        metrics.load_outputs(tmp_path)
    assert "a.jsonl" in str(e.value) and "b.jsonl" in str(e.value)


def test_load_files_with_different_inputs(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows(["1", "2", "3"]))
    write_jsonl(tmp_path / "b.jsonl", rows(["1", "2", "3"], sources=("src one", "src two", "X")))
    with pytest.raises(MetricsError) as e:
        metrics.load_outputs(tmp_path)
    msg = str(e.value)
    assert "a.jsonl" in msg and "b.jsonl" in msg and "line 3" in msg and "source" in msg


# ----------------------------------------------------------------------------- command line

def run_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def make_outputs(folder):
    recovers = [[S1, S2, "the cat sat on a mat"], [S1, S2, "a dog ran to a ball"]]
    sources = ("the cat is on the mat", "the dog ran", "a cat on a mat")
    for seed, recs in enumerate(recovers):
        write_jsonl(folder / f"test.seed{seed}.step10.jsonl",
                    [{"source": s, "reference": r, "recover": h}
                     for s, r, h in zip(sources, [S1, S2, "the cat sat on a mat"], recs)])


def test_cli_end_to_end(tmp_path):
    make_outputs(tmp_path)
    out_json = tmp_path / "scores.json"
    res = run_cli(tmp_path, "--baseline", "--json", out_json)
    assert res.returncode == 0, res.stderr
    assert "BLEU" in res.stdout and "Self-BLEU" in res.stdout and "copy source" in res.stdout
    report = json.loads(out_json.read_text())
    assert report["num_inputs"] == 3 and report["num_candidates"] == 2
    assert report["selection"] == "mbr"
    assert {"model", "copy source"} <= set(report)


def test_cli_single_file_and_folder_flag(tmp_path):
    make_outputs(tmp_path)
    res = run_cli("--folder", tmp_path / "test.seed0.step10.jsonl")
    assert res.returncode == 0, res.stderr
    assert "BLEU" in res.stdout and "Self-BLEU" not in res.stdout


def test_cli_bad_file_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    res = run_cli(bad)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "bad.jsonl" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_bertscore_without_model_exits_2(tmp_path):
    make_outputs(tmp_path)
    res = run_cli(tmp_path, "--bertscore_model", "/nonexistent")
    assert res.returncode == 2
    assert "/nonexistent" in res.stderr and "local disk" in res.stderr
    assert "Traceback" not in res.stderr


def test_scores_normalise_both_sides_like_the_paper():
    """BERT basic tokenisation and lowercase on both sides: the same words score the same
    whatever the case, spacing or apostrophe style of either side."""
    from diffuseq.metrics import normalize
    assert normalize("Three days' journey, O LORD!") == "three days ' journey , o lord !"
    ref = ["And they went three days' journey into the wilderness."]
    for hyp in ("and they went three days ' journey into the wilderness .",
                "AND they went three days'journey into the wilderness.",
                "And they went three days' journey into the wilderness."):
        s = metrics.evaluate([[hyp]], ref, mbr=False)
        assert s["sentence_bleu"] == pytest.approx(100.0) and s["rouge_l"] == pytest.approx(100.0), hyp
        assert s["bleu"] == pytest.approx(100.0)
    raw = metrics.evaluate([["and they went three days ' journey into the wilderness ."]], ref, mbr=False,
                   normalise=False)
    assert raw["rouge_l"] < 90  # without normalising, spacing and case cost points


# ----------------------------------------------------------------------------- the original's protocol

def test_original_cleanup_deletes_tokens_and_keeps_the_spaces():
    src, ref, hyp = metrics.original_cleanup(" [CLS] a b [SEP] ", "[CLS] x [PAD] [SEP]",
                                             " [CLS] hi [SEP] [PAD] [PAD] ")
    assert (src, ref, hyp) == (" a b ", " x [PAD] ", " hi   ")  # references keep [PAD]
    assert metrics.original_len(hyp) == 5  # '', 'hi', '', '', '': pieces between single spaces
    assert metrics.original_len("") == 1 and metrics.original_len("a b") == 2


def test_original_bleu_closed_forms():
    assert metrics.original_bleu("a b c d", "a b c d") == 1.0
    assert metrics.original_bleu("a b c d", "e f g h") == 0
    # n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty: BLEU = (1/5)^(1/4)
    assert metrics.original_bleu("a b c d e", "a b c d f") == pytest.approx(0.2 ** 0.25, abs=1e-12)
    # every precision 1, hypothesis 4 tokens against 5: BLEU = exp(1 - 5/4)
    assert metrics.original_bleu("a b c d", "a b c d e") == pytest.approx(2.718281828459045 ** -0.25, abs=1e-12)
    assert metrics.original_bleu("A b c d", "a b c d") < 1  # case kept


def test_original_rouge_l_normalises_as_torchmetrics():
    # lowercase, everything but [a-z0-9] a separator: [the, cat, sat] vs [the, cat, was, sitting],
    # LCS 2, P = 2/3, R = 1/2, F1 = 4/7 (rounded to float32)
    f = metrics.original_rouge_l("The cat, sat!", "the cat was sitting")
    assert f == pytest.approx(4 / 7, abs=1e-7) and f == float(np.float32(4 / 7))
    assert metrics.original_rouge_l("naïve?", "NA ve") == 1.0  # the non-ASCII letter splits the word
    assert metrics.original_rouge_l("", "a b") == 0.0 and metrics.original_rouge_l("?!", "a") == 0.0


def test_original_dist1_and_scores():
    assert metrics.original_dist1("a a b") == pytest.approx(2 / 3) and metrics.original_dist1("  ") == 0
    s = metrics.original_scores(["a b c d", ""], ["a b c d", "x"])
    assert s == pytest.approx({"bleu": 0.5, "rouge_l": 0.5, "dist1": 0.5, "avg_len": 2.5})


def test_original_mbr_pick_and_diversity():
    """BLEU is not symmetric: "a b c d" against "a b c d e" scores exp(-1/4) (brevity penalty),
    the other way round (1/5)^(1/4), so the shorter candidate is picked."""
    cands = ["a b c d", "a b c d e", "x y z w"]
    assert metrics.original_mbr_pick(cands) == 0
    assert metrics.original_mbr_pick(["a", "b", "c"]) == 0  # a tie: the first
    self_bleu, div4 = metrics.original_diversity([cands[:2], ["p q r s"]])
    # input 1: one pair (0 against 1), 4-grams {abcd, abcd, bcde}; input 2: no pair, one 4-gram
    assert self_bleu == pytest.approx((2.718281828459045 ** -0.25 + 0) / 2, abs=1e-12)
    assert div4 == pytest.approx((2 / 3 + 1) / 2)


def test_cli_original_protocol(tmp_path):
    """Each file against its own reference, the MBR pick against the first file's; .jsonl files
    are not the original's and are left out when .json files are there."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    rows = [("[CLS] q1 [SEP]", "a b c d [SEP]"), ("[CLS] q2 [SEP]", "p q r s [SEP]")]
    write_jsonl(folder / "seed1_step0.json", [{"source": s, "reference": r, "recover": h} for (s, r), h in
                                              zip(rows, ["[CLS] a b c d [SEP] [PAD]", "x y z w"])])
    write_jsonl(folder / "seed2_step0.json", [{"source": s, "reference": "other", "recover": h} for (s, _), h in
                                              zip(rows, ["a b c d e", "p q r s"])])
    write_jsonl(folder / "ours.jsonl", [{"source": "s", "reference": "r", "recover": "h"}])
    out = tmp_path / "scores.json"
    res = run_cli(folder, "--protocol", "original", "--json", out, "--bertscore_model", tmp_path / "none")
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert [f["file"] for f in rep["files"]] == ["seed1_step0.json", "seed2_step0.json"]
    assert rep["files"][0]["bleu"] == pytest.approx(0.5) and rep["files"][1]["bleu"] == 0
    assert rep["files"][0]["avg_len"] == pytest.approx(5.5)  # " a b c d  " has 7 pieces, "x y z w" 4
    # picks: "a b c d" (the shorter, see above) and a tie between disjoint "x y z w" / "p q r s": the first
    assert rep["mbr"]["bleu"] == pytest.approx(0.5)
    assert rep["diversity"]["self_bleu"] == pytest.approx(2.718281828459045 ** -0.25 / 2, abs=1e-12)
    assert any("1 .jsonl file(s) left out" in n for n in rep["notes"])
    assert any(n.startswith("BERTScore left out") for n in rep["notes"]) and "bertscore" not in rep["mbr"]
    write_jsonl(folder / "seed3_step0.json", [{"source": "s", "reference": "r", "recover": "h"}] * 3)
    res = run_cli(folder, "--protocol", "original")
    assert res.returncode == 2 and "more than the 2" in res.stderr and "Traceback" not in res.stderr
