"""
Tokenizers for DiffuSeq: a thin wrapper over the `tokenizers` library.

Two ways to get one:
  - train_tokenizer: a WordPiece (BERT-style) or byte-level BPE vocabulary trained on the data,
  - load_bert_vocab: a local BERT `vocab.txt` (nothing is ever downloaded).
A tokenizer is saved as a single `tokenizer.json`, so a checkpoint folder can carry it.
Special tokens come first, so [PAD] is id 0 for trained vocabularies (and for BERT's own).
"""

import os
import re

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]


class TokenizerError(ValueError):
    pass


# WordPiece decoding leaves "what is it ?"; glue punctuation back onto its word.
_CLOSERS = re.compile(r" ([.,!?;:%)\]}])")
_OPENERS = re.compile(r"([(\[{$]) ")
_JOINERS = re.compile(r"(?<=\w) ([/-]) (?=\w)")
# an apostrophe before a clitic joins both sides ("don't", "god's"); otherwise it closes the word
# before it ("three days' journey")
_CLITIC = re.compile(r"(?<=\w) ' (s|t|ll|re|ve|d|m)\b", re.IGNORECASE)
_POSSESSIVE = re.compile(r"(?<=\w) '(?= |$)")


def _tidy(text):
    text = " ".join(text.split())
    text = re.sub(r"^(##)+", "", text)  # a continuation piece with nothing before it
    text = _CLOSERS.sub(r"\1", text)
    text = _OPENERS.sub(r"\1", text)
    text = _JOINERS.sub(r"\1", text)
    text = _CLITIC.sub(r"'\1", text)
    return _POSSESSIVE.sub("'", text)


class Tokenizer:
    """A `tokenizers.Tokenizer` with the five special tokens DiffuSeq needs."""

    def __init__(self, hf):
        self.hf = hf
        ids = {t: hf.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise TokenizerError(f"vocabulary lacks the special tokens {', '.join(missing)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self.special_ids = frozenset(ids.values())
        self.wordpiece = isinstance(hf.model, models.WordPiece)

    @property
    def vocab_size(self):
        return self.hf.get_vocab_size(with_added_tokens=True)

    def __len__(self):
        return self.vocab_size

    def encode(self, text):
        """text -> list of ids, no special tokens."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        """list of N texts -> N lists of ids, no special tokens (batched in Rust, in parallel)."""
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # _fast: no offsets
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def _clean(self, ids):
        # keep what comes before the first [SEP] or [PAD], minus any other special token
        out = []
        for i in ids:
            i = int(i)
            if i == self.sep_id or i == self.pad_id:
                break
            if i not in self.special_ids:
                out.append(i)
        return out

    def _finish(self, text):
        return _tidy(text) if self.wordpiece else " ".join(text.split())

    def decode(self, ids):
        """list (or 1-D tensor) of ids -> text, cut at the first [SEP] or [PAD]."""
        return self._finish(self.hf.decode(self._clean(ids), skip_special_tokens=True))

    def decode_batch(self, batch, cleanup="cut"):
        """list of id lists (or a [B, L] tensor) -> list of B texts. cleanup "cut": each text ends
        at its first [SEP] or [PAD], without special tokens; "original", as the original DiffuSeq
        scores its outputs: [CLS], [SEP] and [PAD] are dropped wherever they are, and everything
        else is kept ([UNK] and any words after the first [SEP] included)."""
        if cleanup == "original":
            drop = {self.cls_id, self.sep_id, self.pad_id}
            kept = [[int(i) for i in ids if int(i) not in drop] for ids in batch]
            return [self._finish(t) for t in self.hf.decode_batch(kept, skip_special_tokens=False)]
        if cleanup != "cut":
            raise ValueError(f"unknown cleanup {cleanup!r}; choose cut or original")
        cleaned = [self._clean(ids) for ids in batch]
        return [self._finish(t) for t in self.hf.decode_batch(cleaned, skip_special_tokens=True)]

    def to_str(self):
        """The whole tokenizer as a JSON string (used as a cache key)."""
        return self.hf.to_str()

    def save(self, path):
        """Write `tokenizer.json` into the folder `path` (or to `path` itself if it ends in .json)."""
        if not path.endswith(".json"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, "tokenizer.json")
        self.hf.save(path)
        return path

    @classmethod
    def load(cls, path):
        """Read a tokenizer saved by `save` (a folder holding tokenizer.json, or the file)."""
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise TokenizerError(f"no tokenizer file at {path}")
        try:
            hf = HFTokenizer.from_file(path)
        except Exception as e:  # the library raises a bare Exception on a malformed file
            raise TokenizerError(f"{path}: not a tokenizer file ({e})") from None
        return cls(hf)


def _wordpiece(vocab=None, lowercase=True):
    hf = HFTokenizer(models.WordPiece(vocab=vocab, unk_token=UNK) if vocab else models.WordPiece(unk_token=UNK))
    hf.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # we tidy ourselves, see _tidy
    return hf


def train_tokenizer(texts, vocab_size=8000, algorithm="wordpiece", lowercase=True):
    """Train a vocabulary on an iterator of strings; special tokens get ids 0..4 ([PAD] = 0)."""
    if algorithm == "wordpiece":
        hf = _wordpiece(lowercase=lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif algorithm == "bpe":
        hf = HFTokenizer(models.BPE())
        hf.normalizer = normalizers.Sequence(
            [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # every byte is covered: no [UNK]
    else:
        raise TokenizerError(f"unknown tokenizer algorithm {algorithm!r} (use 'wordpiece' or 'bpe')")
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf)


def load_bert_vocab(vocab_path, lowercase=True):
    """A WordPiece tokenizer from a BERT vocab.txt (or a folder with one). Use lowercase=False for cased models."""
    path = vocab_path
    if path and os.path.isdir(path):
        path = os.path.join(path, "vocab.txt")
    if not path or not os.path.isfile(path):
        where = f"{vocab_path} has no vocab.txt" if vocab_path else "no --vocab_path was given"
        raise TokenizerError(
            f"--vocab bert needs a local BERT vocabulary, but {where}. Pass e.g. "
            "--vocab_path /path/to/bert-base-uncased (a folder with vocab.txt, as saved by "
            "save_pretrained); nothing is downloaded. Or use --vocab own (the default) to train "
            "a vocabulary on the data.")
    return Tokenizer(_wordpiece(models.WordPiece.read_file(path), lowercase=lowercase))


def build_tokenizer(kind, data_dir, vocab_size=8000, vocab_path=None, algorithm="wordpiece",
                    skip_bad_lines=False, lowercase=True):
    """kind='own': train on src and trg of data_dir/train.jsonl; kind='bert': load vocab_path.
    lowercase=False keeps case (a cased vocabulary, for tasks where case matters)."""
    if kind == "bert":
        return load_bert_vocab(vocab_path, lowercase=lowercase)
    if kind != "own":
        raise TokenizerError(f"unknown --vocab {kind!r} (use 'own' or 'bert')")
    from diffuseq.data.dataset import read_pairs
    pairs = read_pairs(os.path.join(data_dir, "train.jsonl"), skip_bad_lines=skip_bad_lines)
    texts = (text for pair in pairs for text in pair)  # streamed, never a list
    return train_tokenizer(texts, vocab_size=vocab_size, algorithm=algorithm, lowercase=lowercase)
