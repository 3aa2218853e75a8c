"""Smoke tests of the benchmarks: each runs with --quick, exits 0 and writes its table and JSON.
How fast anything is, is not tested here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QQP = ROOT.parent / "shared" / "data" / "qqp_small"


def run(script, tmp_path, *extra):
    out = tmp_path / f"{script}.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--quick", "--json", str(out),
                        *extra], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout, out


@pytest.mark.parametrize("extra", [(), ("--steps_memory",)])
def test_bench_train_quick(tmp_path, extra):
    stdout, out = run("bench_train", tmp_path, *extra)
    assert "preset" in stdout and "tiny" in stdout
    record = json.loads(out.read_text())
    assert record["benchmark"].startswith("bench_train") and record["results"]
    if not extra:
        assert "ours" in stdout
        # the BERT baseline runs where transformers is installed, and says it was left out otherwise
        import importlib.util
        has_transformers = importlib.util.find_spec("transformers") is not None
        assert ("bert-eager" in stdout) == has_transformers
        assert ("baseline skipped" in stdout) == (not has_transformers)


def test_bench_decode_quick(tmp_path):
    stdout, out = run("bench_decode", tmp_path)
    assert "DPM-Solver++" in stdout and "ancestral" in stdout
    record = json.loads(out.read_text())
    assert {r["sampler"] for r in record["results"]} == {"ancestral", "dpm"}


def test_bench_v2_quick(tmp_path):
    if not (QQP / "train.jsonl").is_file():
        pytest.skip(f"no qqp_small data at {QQP}")
    stdout, out = run("bench_v2", tmp_path, "--out", str(tmp_path / "runs"))
    assert "copy source" in stdout and "v2" in stdout
    record = json.loads(out.read_text())
    assert set(record["train"]) == {"v1", "v2"} and record["decode"]


@pytest.mark.slow
def test_bench_quality_quick(tmp_path):
    """Two recipes trained for a few steps, decoded two ways, scored beside the copy line."""
    pytest.importorskip("pythonbible")
    stdout, out = run("bench_quality", tmp_path, "--out", str(tmp_path / "q"), "--recipes",
                      "ladder-v2,ladder-seg-floor", "--decoders", "dpm10,anc100_clamp_all")
    record = json.loads(out.read_text())
    assert [r["recipe"] for r in record["results"]] == ["ladder-v2", "ladder-seg-floor"]
    for r in record["results"]:
        assert set(r["scores"]) == {"dpm10", "anc100_clamp_all", "copy"} and r["steps"] == 30
        assert r["target_tokens"] > 30 * 32  # at least one token per example and step
    assert "copy the source" in stdout and "ladder-seg-floor" in stdout
    # the per-recipe files make the report on their own
    rep = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quality.py"), "--report", "--markdown",
                          "--out", str(tmp_path / "q")], capture_output=True, text=True, cwd=ROOT)
    assert rep.returncode == 0 and rep.stdout.startswith("| recipe |") and "copy the source" in rep.stdout


def test_bench_peer_report_reads_the_saved_comparison():
    """The side-by-side record in bench/peer/ prints as tables whose ratios are the record's own
    figures divided (the original's s/step over ours; ours' sentences/s over the original's)."""
    rec = json.loads((ROOT / "bench" / "peer" / "peer.json").read_text())
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_peer.py"), "--report",
                        str(ROOT / "bench" / "peer" / "peer.json")], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    for preset in ("tiny", "base"):
        d = rec["train"][preset]
        ratio = d["peer"]["s_per_step"] / d["ours"]["s_per_step"]
        assert any(line.split()[:2] == [preset, "ours"] and f"{ratio:.2f}x" in line for line in p.stdout.splitlines())
    d = rec["decode"]["dpm10"]
    ratio = d["ours"]["sent_per_s"] / d["peer"]["sent_per_s"]
    assert any(line.startswith("dpm10") and " ours " in line and f"{ratio:.2f}x" in line
               for line in p.stdout.splitlines())
    # every ablation row of the record is printed with its own figure
    for r in rec["ablation"] + rec["ablation_base"]:
        assert f"{r['s_per_step']:.3g}" in p.stdout, r
    assert "ours, base, batch 64" in p.stdout


def test_convergence_reads_steps_to_a_score_between_checkpoints():
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_convergence import steps_to_reach
    curve = [(1000, 10.0), (2000, 20.0), (4000, 30.0)]
    assert steps_to_reach(curve, 25.0) == pytest.approx(3000.0)  # halfway from 2,000 to 4,000
    assert steps_to_reach(curve, 5.0) == 1000 and steps_to_reach(curve, 31.0) is None


def test_decoding_frontier_runs_named_settings(tmp_path):
    """bench_decoding on a tiny trained model: one row per named setting, and the copy line."""
    from toy import tiny_args, toy_data
    from diffuseq.trainer import Trainer
    d = toy_data(tmp_path)
    run_dir = tmp_path / "run"
    Trainer(tiny_args(d, run_dir, "--learning_steps", "2", "--eval_interval", "0", "--learned_mean_embed",
                      "--denoise", "--diffusion_steps", "2000")).train()
    out = tmp_path / "f.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_decoding.py"), "--model_dir", str(run_dir),
                        "--max_examples", "6", "--only", "dpm10", "source50_1", "--mbr", "1", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert [r["settings"]["init"] for r in rec["rows"]] == ["noise", "source"]
    assert rec["examples"] == 6 and "sentence_bleu" in rec["copy"] and [m["candidates"] for m in rec["mbr"]] == [1, 2]


def test_transformer_baseline_trains_decodes_and_scores(tmp_path):
    """A few seconds of the autoregressive baseline on the Bible: greedy and beam-4 outputs of the
    first held-out verses, scored beside copying, with the record report_quality reads; the snapshot
    halfway is scored as well."""
    pytest.importorskip("pythonbible")
    out = tmp_path / "baseline_bible.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "baseline_transformer.py"), "--data", "bible",
                        "--minutes", "0.1", "--eval_every", "2", "--bsz", "8", "--max_examples", "4", "--threads", "1",
                        "--snapshots", "0.05", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["steps"] >= 2 and rec["best_step"] >= 2 and rec["curve"]
    for name in ("greedy", "beam4"):
        d = rec["decoders"][name]
        assert 0 <= d["sentence_bleu"] <= 100
        rows = [json.loads(x) for x in (tmp_path / f"baseline_bible.{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(set(r) == {"source", "reference", "recover"} for r in rows)
    assert rec["copy"]["sentence_bleu"] > 30  # KJV and WEB share most words
    [snap] = rec["snapshots"]
    assert snap["minutes"] == 0.05 and 0 < snap["steps"] < rec["steps"] and "state" not in snap
    assert set(snap["decoders"]) == {"greedy", "beam4"}
    assert (tmp_path / "baseline_bible.0.05min.greedy.jsonl").is_file()


def _tuning_part(path, lr, dropout, bleu, minutes=15):
    row = {"lr": lr, "dropout": dropout, "steps": 100, "best_step": 100, "best_valid_loss": 2.0, "train_s": 60.0,
           "decode_s": 1.0, "choose": {"sentence_bleu": bleu, "bleu": bleu, "rouge_l": 50.0}}
    path.write_text(json.dumps({"data": "bible", "minutes": minutes, "threads": 1, "choose_pairs": 200,
                                "args": {"threads": 1, "bsz": 32}, "rows": [row]}))
    return str(path)


def test_tuning_parts_merge_into_one_grid(tmp_path):
    """Parts of the Transformer's lr x dropout grid, run one per core, combine into one record whose
    winner is the best row of all parts, with the command that trains it; a part of another grid is
    refused in one line."""
    parts = [_tuning_part(tmp_path / "a.json", 1e-3, 0.1, 60.0), _tuning_part(tmp_path / "b.json", 2e-3, 0.1, 62.5),
             _tuning_part(tmp_path / "c.json", 2e-3, 0.3, 61.0)]
    out = tmp_path / "merged.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "tune_transformer.py"), "--merge", *parts,
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    assert len(rec["rows"]) == 3 and rec["grid"] == {"lr": [1e-3, 2e-3], "dropout": [0.1, 0.3]}
    assert rec["best"] == {"lr": 2e-3, "dropout": 0.1}
    assert "--bsz 32" in rec["command"] and rec["command"].endswith("--lr 0.002 --dropout 0.1")
    other = _tuning_part(tmp_path / "d.json", 4e-3, 0.1, 70.0, minutes=10)
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "tune_transformer.py"), "--merge", parts[0], other,
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode != 0 and "d.json: not a part of" in p.stderr and "minutes" in p.stderr


def test_beam_search_finds_the_path_greedy_misses():
    """A Markov chain as the model: after [CLS], a (0.6) or b (0.4); after a, a again (0.5) or
    [SEP] (0.1); after b, [SEP] (0.95). Greedy takes a and never stops; a beam of 4 finds "b
    [SEP]", the best by length-normalised log-probability, closed form: log(0.4 * 0.95) / 2^0.6."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from baseline_transformer import beam_search

    class Tok:
        pad_id, cls_id, sep_id = 0, 2, 3
    A, B = 4, 5
    probs = torch.full((6, 6), 1e-6)
    probs[Tok.cls_id, A], probs[Tok.cls_id, B] = 0.6, 0.4
    probs[A, A], probs[A, B], probs[A, Tok.sep_id] = 0.5, 0.4, 0.1
    probs[B, Tok.sep_id], probs[B, A] = 0.95, 0.05
    probs[Tok.sep_id, Tok.sep_id] = 1.0

    class Chain:
        def encode(self, src, pad):
            return torch.zeros(src.shape[0], src.shape[1], 1)

        def decode(self, memory, src_pad, prefix):
            return probs[prefix].log()

    src = torch.full((1, 5), 7)
    limit = 2 * 5 + 10
    assert beam_search(Chain(), src, Tok, beam=1) == [[A] * limit]
    assert beam_search(Chain(), src, Tok, beam=4) == [[B]]


def test_quality_report_reads_the_saved_records():
    """docs/quality.md's held-out tables come from bench/quality/*.json: each data set with a
    record gets the copy line, the Transformer rows and the diffusion runs' rows."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "report_quality.py"), "--data", "bible"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "### bible" and any(x.startswith("| copy the source |") for x in lines)
    assert sum("Transformer" in x for x in lines) == 2  # greedy and beam 4
    assert any("`bible-tiny` |" in x and "(best on valid)" in x for x in lines)


def test_heldout_row_scores_the_mbr_pick_among_seeds():
    """A held-out row decoded with 3 seeds where seed 0 strays and seeds 1 and 2 agree on the
    reference: the first seed's BLEU is 0, and the MBR pick (the candidate closest to the others)
    is the reference, so its BLEU is 100."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_heldout import decode_row

    class Outputs:
        def generate(self, src, seed, **kw):
            return ["x y z w v"] * len(src) if seed == 0 else ["a b c d e"] * len(src)

    pairs = [("a b c d", "a b c d e"), ("a b", "a b c d e")]
    row = decode_row(Outputs(), dict(init="noise", sampler="dpm", steps=10), pairs, seeds=3, bsz=2)
    assert row["sentence_bleu"] == 0 and row["seeds"] == 3
    assert row["mbr"]["sentence_bleu"] == 100 and row["mbr"]["rouge_l"] == 100


def test_heldout_noise_row_follows_the_tuners_tie_rule():
    """Two settings tie on the choose pairs: the held-out 'best' and 'noise' rows both take the
    faster one, so a grid that starts from noise throughout (the masked family's) decodes one row;
    a source start that wins adds the best noise start as a second row."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_heldout import best_and_noise

    def row(bleu, seconds, **settings):
        return dict(settings=dict(sampler="topk", init="noise", **settings), sentence_bleu=bleu, seconds=seconds)

    slow, fast = row(6.0, 23.4, steps=20), row(6.0, 11.9, steps=10, remask_mode="stochastic")
    assert best_and_noise([slow, fast, row(5.0, 5.0, steps=5)]) == [("best", fast["settings"])]
    source = dict(settings=dict(sampler="dpm", init="source", t=50, steps=1), sentence_bleu=9.0, seconds=1.0)
    assert best_and_noise([slow, source, fast]) == [("best", source["settings"]), ("noise", fast["settings"])]


def test_quality_report_names_a_masked_runs_options():
    """A held-out record of a masked run trained with --coupled is labelled with that option, so
    its row cannot pass for the recipe's own."""
    sys.path.insert(0, str(ROOT / "bench"))
    from report_quality import _label
    from diffuseq.config import parse_train_args

    args = parse_train_args(["--recipe", "bible-masked"]).to_dict()
    assert _label({"recipe": "bible-masked", "run_args": args}) == "`bible-masked`"
    assert _label({"recipe": "bible-masked", "run_args": dict(args, coupled=True)}) == "`bible-masked` `--coupled true`"
