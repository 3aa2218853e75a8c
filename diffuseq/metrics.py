"""Metrics for generated sequences, and the loader for decoding outputs.

Every function takes plain lists of strings. Texts are split on whitespace for every metric except
`corpus_bleu`, which uses sacrebleu's own tokeniser (13a) so that its number is comparable with
published sacrebleu scores. `evaluate` first normalises hypotheses and references alike, as the
DiffuSeq paper scores them: BERT's basic tokenisation (punctuation split from words, accents
stripped) and lowercase. Scores therefore do not depend on how a model's tokenizer writes text
back, nor on the case or spacing of the user's references. Every score (BLEU, ROUGE-L, Dist-n, Div-n, BERTScore) is returned on a
0-100 scale; only `avg_len` is a count of tokens. The exceptions are the `original_*` functions and
`evaluate_original`: they compute what the original DiffuSeq's scripts/eval_seq2seq.py computes, on
its 0-1 scale.

Several decoding seeds give several candidates for one input. These appear as `candidates`: one list
per input, holding that input's candidate strings (`candidates[i][j]` is seed j's output for input
i). Minimum Bayes risk (MBR) decoding picks one candidate per input: the one that agrees most, in
sentence BLEU, with the other candidates of the same input.
"""

import glob
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

_smooth = SmoothingFunction().method4


class MetricsError(ValueError):
    """A problem with the inputs to evaluation, worded for the user of the command line."""


# ----------------------------------------------------------------------------- helpers

def _ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _sent_bleu(hyp_tokens, refs_tokens):
    """NLTK sentence BLEU-4 with smoothing method 4, on 0-1. An empty hypothesis scores 0."""
    if not hyp_tokens:
        return 0.0
    return sentence_bleu(refs_tokens, hyp_tokens, smoothing_function=_smooth)


def _check_pairs(hyps, refs):
    if len(hyps) != len(refs):
        raise MetricsError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise MetricsError("nothing to score: no hypotheses")


class _WhitespaceTokenizer:
    # rouge-score's default tokeniser lowercases and drops every non-[a-z0-9] character, which
    # erases non-English text; splitting on whitespace keeps ROUGE-L on the same tokens as BLEU.
    def tokenize(self, text):
        return text.split()


_bert_norm = _bert_pre = None


def normalize(text):
    """BERT basic tokenisation, lowercased: "Three days' journey." -> "three days ' journey ."."""
    global _bert_norm, _bert_pre
    if _bert_norm is None:
        from tokenizers import normalizers, pre_tokenizers
        _bert_norm = normalizers.BertNormalizer(lowercase=True)
        _bert_pre = pre_tokenizers.BertPreTokenizer()
    return " ".join(w for w, _ in _bert_pre.pre_tokenize_str(_bert_norm.normalize_str(text)))


# ----------------------------------------------------------------------------- quality

def corpus_bleu(hyps, refs, tokenize="13a"):
    """Corpus BLEU-4 from sacrebleu (13a tokenisation, or "none" for texts tokenized already, as
    `normalize` leaves them; one reference per hypothesis), 0-100.

    Like any BLEU-4 without smoothing it is 0 when the corpus holds no matching 4-gram at all.
    """
    _check_pairs(hyps, refs)
    # force: normalised text is tokenized on purpose, which sacrebleu would otherwise warn about
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tokenize,
                                       force=tokenize == "none").score)


def sentence_bleu_avg(hyps, refs):
    """Mean sentence BLEU-4 over whitespace tokens, NLTK smoothing method 4, on 0-100.

    This is the BLEU the DiffuSeq paper reports (there on 0-1; multiply its numbers by 100).
    """
    _check_pairs(hyps, refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on every sentence with no 4-gram match
        scores = [_sent_bleu(h.split(), [r.split()]) for h, r in zip(hyps, refs)]
    return 100.0 * sum(scores) / len(scores)


def rouge_l(hyps, refs):
    """Mean ROUGE-L F1 over sentence pairs, whitespace tokens, case kept, no stemming; 0-100.

    F1 = 2 P R / (P + R) with P = LCS / len(hyp) and R = LCS / len(ref), LCS counted in tokens.
    """
    _check_pairs(hyps, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WhitespaceTokenizer())
    scores = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]
    return 100.0 * sum(scores) / len(scores)


def avg_len(hyps):
    """Mean length of the hypotheses in whitespace tokens."""
    if not hyps:
        raise MetricsError("nothing to score: no hypotheses")
    return sum(len(h.split()) for h in hyps) / len(hyps)


# ----------------------------------------------------------------------------- diversity

def dist_n(hyps, n=1):
    """Intra-sentence Dist-n, 0-100: the mean over sentences of distinct n-grams / n-grams.

    Each sentence is scored on its own ("a a b" has Dist-1 = 2/3) and the ratios are averaged, as in
    DiffuSeq's evaluation of Dist-1; it measures repetition inside a sentence, not variety across
    the corpus. A sentence with no n-gram (shorter than n tokens) counts as 0.
    """
    if not hyps:
        raise MetricsError("nothing to score: no hypotheses")
    ratios = []
    for h in hyps:
        grams = _ngrams(h.split(), n)
        ratios.append(len(set(grams)) / len(grams) if grams else 0.0)
    return 100.0 * sum(ratios) / len(ratios)


def _check_candidates(candidates, least):
    if not candidates:
        raise MetricsError("nothing to score: no inputs")
    for i, cands in enumerate(candidates):
        if len(cands) < least:
            raise MetricsError(f"input {i} has {len(cands)} candidate(s); at least {least} needed")


def self_bleu(candidates):
    """Self-BLEU, 0-100; lower means the candidates of an input differ more from one another.

    For every input and each of its candidates, the sentence BLEU (as in `sentence_bleu_avg`) of
    that candidate with the input's other candidates as references; the mean over all of them.
    Every input needs at least two candidates.
    """
    _check_candidates(candidates, 2)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cands in candidates:
            toks = [c.split() for c in cands]
            for j, hyp in enumerate(toks):
                scores.append(_sent_bleu(hyp, toks[:j] + toks[j + 1:]))
    return 100.0 * sum(scores) / len(scores)


def div_n(candidates, n=4):
    """Div-n, 0-100: per input, distinct n-grams / all n-grams, both pooled over its candidates.

    Averaged over inputs. High when the candidates of an input share few n-grams (and repeat few
    within themselves). An input whose candidates hold no n-gram counts as 0.
    """
    _check_candidates(candidates, 1)
    ratios = []
    for cands in candidates:
        grams = [g for c in cands for g in _ngrams(c.split(), n)]
        ratios.append(len(set(grams)) / len(grams) if grams else 0.0)
    return 100.0 * sum(ratios) / len(ratios)


# ----------------------------------------------------------------------------- selection

def mbr_select(candidates):
    """Minimum Bayes risk selection with BLEU as utility: one index per input.

    For each input, every candidate is scored by its mean sentence BLEU against each other candidate
    taken as the single reference; the best-scoring index is returned (ties go to the lowest index;
    an input with one candidate gets 0). Costs M * (M - 1) sentence BLEUs per input.
    """
    _check_candidates(candidates, 1)
    picks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cands in candidates:
            toks = [c.split() for c in cands]
            best, best_score = 0, float("-inf")
            for j, hyp in enumerate(toks):
                others = [t for k, t in enumerate(toks) if k != j]
                score = sum(_sent_bleu(hyp, [t]) for t in others) / max(len(others), 1)
                if score > best_score:  # strict: ties keep the earlier index
                    best, best_score = j, score
            picks.append(best)
    return picks


# ----------------------------------------------------------------------------- BERTScore

def _bertscore_backend(model_path):
    """Check the model folder and the optional packages; return the bert_score module."""
    path = Path(model_path)
    how = ("BERTScore needs a model saved on local disk: on a machine with network access run "
           "`transformers.AutoModel.from_pretrained(NAME).save_pretrained(DIR)` and the same with "
           "AutoTokenizer, copy DIR here and pass it as the model path")
    if not path.is_dir():
        raise MetricsError(f"BERTScore model folder {model_path} does not exist. {how}")
    if not (path / "config.json").is_file():
        raise MetricsError(f"{model_path} holds no config.json, so it is not a saved model. {how}")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import bert_score
        import transformers  # noqa: F401  (bert_score loads the model through it)
    except ImportError as e:
        raise MetricsError(f"BERTScore needs the optional packages bert_score and transformers "
                           f"(pip install bert-score transformers): {e}") from None
    return bert_score


def bertscore(hyps, refs, model_path, num_layers=None, batch_size=64):
    """Mean BERTScore F1, 0-100, from a model stored on local disk; never downloads anything.

    model_path: a folder saved with `save_pretrained` (config, weights and tokenizer files), e.g.
        a copy of roberta-large made on a machine with network access.
    num_layers: which hidden layer gives the embeddings; by default the model's last layer. (The
        bert_score package's recommended layer, e.g. 17 for roberta-large, gives numbers that match
        published BERTScores; pass it here to reproduce them.)
    Needs the optional packages `bert_score` and `transformers`. No baseline rescaling, no idf.
    """
    _check_pairs(hyps, refs)
    bert_score = _bertscore_backend(model_path)
    path = Path(model_path)
    if num_layers is None:
        num_layers = json.loads((path / "config.json").read_text()).get("num_hidden_layers")
        if num_layers is None:
            raise MetricsError(f"{path / 'config.json'} has no num_hidden_layers; pass num_layers")
    _, _, f1 = bert_score.score(list(hyps), list(refs), model_type=str(path),
                                num_layers=num_layers, batch_size=batch_size)
    return 100.0 * f1.mean().item()


# ----------------------------------------------------------------------------- all together

def evaluate(candidates, refs, mbr=True, bertscore_model=None, normalise=True):
    """Score decoding outputs; returns a dict of floats named as below.

    normalise: score `normalize`d texts (both sides); BERTScore always sees the raw texts.

    candidates: one list of M >= 1 candidate strings per input; refs: one reference per input.
    mbr: pick each input's candidate by `mbr_select` (otherwise the first candidate is scored).
    The picked candidates give bleu (sacrebleu corpus), sentence_bleu, rouge_l, dist1, avg_len
    and, with a model path, bertscore. With M > 1 also: self_bleu, div4 and
    sentence_bleu_mean_candidate (sentence BLEU of every candidate, averaged, i.e. the expected
    score of one seed without selection).
    """
    _check_candidates(candidates, 1)
    if len(candidates) != len(refs):
        raise MetricsError(f"{len(candidates)} inputs but {len(refs)} references")
    if bertscore_model is not None:
        _bertscore_backend(bertscore_model)  # fail before the slow part, not after it
    raw_candidates, raw_refs = candidates, refs
    if normalise:
        candidates = [[normalize(c) for c in cands] for cands in candidates]
        refs = [normalize(r) for r in refs]
    several = min(len(c) for c in candidates) > 1
    picks = mbr_select(candidates) if mbr and several else [0] * len(candidates)
    hyps = [cands[j] for cands, j in zip(candidates, picks)]
    out = {
        "bleu": corpus_bleu(hyps, refs, tokenize="none" if normalise else "13a"),
        "sentence_bleu": sentence_bleu_avg(hyps, refs),
        "rouge_l": rouge_l(hyps, refs),
        "dist1": dist_n(hyps, 1),
        "avg_len": avg_len(hyps),
    }
    if bertscore_model is not None:
        raw_hyps = [cands[j] for cands, j in zip(raw_candidates, picks)]
        out["bertscore"] = bertscore(raw_hyps, raw_refs, bertscore_model)
    if several:
        out["self_bleu"] = self_bleu(candidates)
        out["div4"] = div_n(candidates, 4)
        flat_h = [c for cands in candidates for c in cands]
        flat_r = [r for cands, r in zip(candidates, refs) for _ in cands]
        out["sentence_bleu_mean_candidate"] = sentence_bleu_avg(flat_h, flat_r)
    return out


# ----------------------------------------------------------------------------- the original's protocol
# What DiffuSeq's own scripts/eval_seq2seq.py computes, on its 0-1 scale, step for step: each
# file is cleaned and scored on its own; with several files, each input's candidates also give
# Self-BLEU / Div-4, and an MBR pick that is scored against the first file's reference.

ORIGINAL_SOS, ORIGINAL_EOS, ORIGINAL_SEP, ORIGINAL_PAD = "[CLS]", "[SEP]", "[SEP]", "[PAD]"
ORIGINAL_BERTSCORE = ("microsoft/deberta-xlarge-mnli", 40)  # its model; bert_score's layer for it


def original_cleanup(source, reference, recover):
    """One output line as the original scorer reads it: stripped, then the special tokens deleted
    (from the source only the start and end tokens, from the reference not [PAD]). Spaces left
    around a deleted token stay: they count in `original_len`."""
    source = source.strip().replace(ORIGINAL_EOS, "").replace(ORIGINAL_SOS, "")
    reference = reference.strip()
    recover = recover.strip()
    for tok in (ORIGINAL_EOS, ORIGINAL_SOS, ORIGINAL_SEP):
        reference = reference.replace(tok, "")
    for tok in (ORIGINAL_EOS, ORIGINAL_SOS, ORIGINAL_SEP, ORIGINAL_PAD):
        recover = recover.replace(tok, "")
    return source, reference, recover


def original_bleu(hyp, ref):
    """NLTK sentence BLEU-4 with smoothing method 4 on whitespace tokens, case kept; 0-1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref.split()], hyp.split(), smoothing_function=_smooth))


def _rouge_tokens(text):
    # torchmetrics' default ROUGE normaliser: lowercase, every run of characters other than
    # [a-z0-9] becomes one space (so punctuation and non-ASCII letters split words and vanish)
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _lcs_len(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def original_rouge_l(hyp, ref):
    """ROUGE-L F1 on `_rouge_tokens`, 0-1, rounded to float32 as torchmetrics returns it.

    F1 = 2 P R / (P + R), P = LCS / len(hyp), R = LCS / len(ref); 0 when either side is empty.
    """
    h, r = _rouge_tokens(hyp), _rouge_tokens(ref)
    lcs = _lcs_len(h, r) if h and r else 0
    if lcs == 0:
        return 0.0
    p, q = lcs / len(h), lcs / len(r)
    return float(np.float32(2 * p * q / (p + q)))


def original_dist1(hyp):
    """Distinct unigrams / unigrams of one text on whitespace tokens (0 when it has none)."""
    toks = hyp.split()
    return len(set(toks)) / len(toks) if toks else 0


def original_len(hyp):
    """Length as the original counts it: pieces between single spaces, so "" counts 1 and every
    extra space one more."""
    return len(hyp.split(" "))


def original_scores(hyps, refs):
    """Means over the pairs of `original_bleu`, `original_rouge_l`, `original_dist1` and
    `original_len`: bleu, rouge_l, dist1, avg_len."""
    _check_pairs(hyps, refs)
    return {"bleu": float(np.mean([original_bleu(h, r) for h, r in zip(hyps, refs)])),
            "rouge_l": float(np.mean([original_rouge_l(h, r) for h, r in zip(hyps, refs)])),
            "dist1": float(np.mean([original_dist1(h) for h in hyps])),
            "avg_len": float(np.mean([original_len(h) for h in hyps]))}


def original_mbr_pick(cands):
    """Index of the candidate whose `original_bleu` against each other candidate (taken as the
    reference) sums highest; ties go to the lowest index."""
    m = len(cands)
    util = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i != j:
                util[i, j] = original_bleu(cands[i], cands[j])
    return int(np.argmax(util.sum(-1)))


def original_diversity(candidates):
    """(Self-BLEU, Div-4) over inputs, 0-1. Per input: the mean `original_bleu` of candidate i
    against candidate j over the pairs i < j (0 for a single candidate), and distinct / all
    4-grams pooled over its candidates (0 when there is none)."""
    self_bleus, div4s = [], []
    for cands in candidates:
        pairs = [original_bleu(a, b) for i, a in enumerate(cands) for b in cands[i + 1:]]
        self_bleus.append(np.mean(pairs) if pairs else 0.0)
        grams = [g for c in cands for g in _ngrams(c.split(), 4)]
        div4s.append(len(set(grams)) / len(grams) if grams else 0)
    return float(np.mean(self_bleus)), float(np.mean(div4s))


def original_bertscore(hyps, refs, model_path=None):
    """Mean BERTScore F1, 0-1, as the original computes it: microsoft/deberta-xlarge-mnli, layer
    40, no idf, no rescaling. From `model_path` (a local copy of that model) or from the Hugging
    Face cache; never downloads. Raises MetricsError saying why when it cannot run."""
    name, layer = ORIGINAL_BERTSCORE
    if model_path is None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            raise MetricsError("huggingface_hub is not installed") from None
        config = try_to_load_from_cache(name, "config.json")
        if not isinstance(config, str):
            raise MetricsError(f"{name} is not in the Hugging Face cache (pass a local copy with "
                               "--bertscore_model)")
        model_path = os.path.dirname(config)
    bert_score = _bertscore_backend(model_path)
    try:
        _, _, f1 = bert_score.score(list(hyps), list(refs), model_type=str(model_path), num_layers=layer)
    except (OSError, ValueError, AssertionError) as e:
        raise MetricsError(f"BERTScore could not run from {model_path}: {e}") from None
    return f1.mean().item()


def _read_original_file(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsError(f"{path}, line {n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str)
                                                    for k in ("source", "reference", "recover")):
                raise MetricsError(f'{path}, line {n}: the original protocol needs "source", '
                                   '"reference" and "recover" strings on every line')
            rows.append(original_cleanup(obj["source"], obj["reference"], obj["recover"]))
    if not rows:
        raise MetricsError(f"{path}: file is empty")
    return rows


def load_original_outputs(path):
    """The files the original scorer reads and their cleaned lines, and notes on the choice:
    ([(file, [(source, reference, recover), ...]), ...], [note, ...]).

    A folder gives its names that end in "json", sorted, as the original's glob does (so .jsonl
    files are not among them); where there is none, its .jsonl files as `load_outputs` takes
    them, i.e. scored as the original would score them renamed. A file gives itself. A later
    file may have fewer lines than the first, not more.
    """
    path, notes = str(path), []
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "*json")) if os.path.isfile(f))
        ours = sorted(f for f in glob.glob(os.path.join(path, "*.jsonl"))
                      if os.path.isfile(f) and not MBR_FILE.search(os.path.basename(f)))
        if files and ours:
            notes.append(f"{len(ours)} .jsonl file(s) left out, as the original's script leaves them out")
        elif not files:
            files = ours
            notes.append(f"no file name ends in json, the original's pattern: read the {len(ours)} .jsonl "
                         "file(s) instead")
        if not files:
            raise MetricsError(f"{path}: folder holds no file whose name ends in json or .jsonl")
        picks = [os.path.basename(f) for f in files if MBR_FILE.search(os.path.basename(f))]
        if picks:
            notes.append(f"{', '.join(picks)}: MBR pick(s) written by decoding --mbr, read as sample "
                         "files, as the original's script would")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise MetricsError(f"{path} does not exist")
    out = [(f, _read_original_file(f)) for f in files]
    for f, rows in out[1:]:
        if len(rows) > len(out[0][1]):
            raise MetricsError(f"{f} has {len(rows)} lines, more than the {len(out[0][1])} of {files[0]}")
    return out, notes


def evaluate_original(files, mbr=True, bertscore_model=None):
    """Score the files of `load_original_outputs` as the original does; a dict on 0-1 scales:
    files: one `original_scores` dict per file (with its name);
    with several files, diversity: {self_bleu, div4} and, if mbr, mbr: `original_scores` of each
    input's `original_mbr_pick` against the first file's reference;
    bertscore (in each of those dicts) where `original_bertscore` can run, else a note in notes.
    """
    if not files:
        raise MetricsError("nothing to score: no files")
    out = {"files": [], "notes": []}
    bert = True

    def with_bertscore(scores, hyps, refs):
        nonlocal bert
        if bert:
            try:
                scores["bertscore"] = original_bertscore(hyps, refs, bertscore_model)
            except MetricsError as e:
                out["notes"].append(f"BERTScore left out: {e}")
                bert = False
        return scores

    for name, rows in files:
        refs, hyps = [r[1] for r in rows], [r[2] for r in rows]
        out["files"].append(with_bertscore({"file": os.path.basename(name), "num_inputs": len(rows),
                                            **original_scores(hyps, refs)}, hyps, refs))
    if len(files) > 1:
        first = files[0][1]
        candidates = [[rows[i][2] for _, rows in files if i < len(rows)] for i in range(len(first))]
        out["diversity"] = dict(zip(("self_bleu", "div4"), original_diversity(candidates)))
        if mbr:
            hyps = [cands[original_mbr_pick(cands)] for cands in candidates]
            refs = [r[1] for r in first]
            out["mbr"] = with_bertscore(original_scores(hyps, refs), hyps, refs)
    return out


# ----------------------------------------------------------------------------- loading

def _read_jsonl(path):
    """Records of one decoding file, each with the number of the line it came from: "source" and
    "recover" strings, "reference" a string or None (inputs decoded without one)."""
    from .jsonl import DataError, JsonlReader
    try:
        records = list(JsonlReader(str(path), ("source", "recover"), ("reference",), error=MetricsError))
    except DataError as e:  # a missing file
        raise MetricsError(str(e)) from None
    if not records:
        raise MetricsError(f"{path}: file is empty")
    return records


MBR_FILE = re.compile(r"\.mbr\d+\.")  # decoding.write_mbr's files


def load_outputs(path):
    """Read decoding outputs: a `.jsonl` file, or a folder whose `*.jsonl` files (sorted by name)
    are candidates for the same inputs, e.g. one file per decoding seed. A folder's MBR picks
    (`<split>.mbr<N>...jsonl`, written by `--mbr`) are outputs chosen among the others, not
    candidates of their own, so they are left out; score one by naming the file.

    Each line is {"source": str, "reference": str, "recover": str}; "reference" may be absent
    (an input decoded without one: None in the list returned). Files of one folder must list
    the same inputs in the same order. Returns (sources, references, candidates), candidates[i]
    holding input i's `recover` from every file. Raises MetricsError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        raise MetricsError(f"{path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file() and not MBR_FILE.search(p.name))
        if not files:
            raise MetricsError(f"{path}: folder holds no .jsonl file")
    else:
        files = [path]

    first = _read_jsonl(files[0])
    candidates = [[obj["recover"]] for _, obj in first]
    for other in files[1:]:
        records = _read_jsonl(other)
        if len(records) != len(first):
            raise MetricsError(f"{files[0]} has {len(first)} records but {other} has "
                               f"{len(records)}: they must hold the same inputs")
        for i, ((line_a, a), (line_b, b)) in enumerate(zip(first, records)):
            for key in ("source", "reference"):
                if a[key] != b[key]:
                    where = (f"line {line_a}" if line_a == line_b
                             else f"line {line_a} of the first, line {line_b} of the second")
                    raise MetricsError(f"{files[0]} and {other} disagree on the {key} of input "
                                       f"{i + 1} ({where})")
            candidates[i].append(b["recover"])
    sources = [obj["source"] for _, obj in first]
    references = [obj["reference"] for _, obj in first]
    return sources, references, candidates
