"""Metrics for generated sequences, and the loader for decoding outputs.

Every function takes plain lists of strings. Texts are split on whitespace for every metric except
`corpus_bleu`, which uses sacrebleu's own tokeniser (13a) so that its number is comparable with
published sacrebleu scores. `evaluate` first normalises hypotheses and references alike, as the
DiffuSeq paper scores them: BERT's basic tokenisation (punctuation split from words, accents
stripped) and lowercase. Scores therefore do not depend on how a model's tokenizer writes text
back, nor on the case or spacing of the user's references. Every score (BLEU, ROUGE-L, Dist-n, Div-n, BERTScore) is returned on a
0-100 scale; only `avg_len` is a count of tokens.

Several decoding seeds give several candidates for one input. These appear as `candidates`: one list
per input, holding that input's candidate strings (`candidates[i][j]` is seed j's output for input
i). Minimum Bayes risk (MBR) decoding picks one candidate per input: the one that agrees most, in
sentence BLEU, with the other candidates of the same input.
"""

import json
import os
import re
import warnings
from pathlib import Path

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
