import json

import pytest
import torch

from diffuseq.tokenizer import (SPECIAL_TOKENS, Tokenizer, TokenizerError, build_tokenizer,
                                load_bert_vocab, train_tokenizer)

SENTENCES = [
    "how do i learn python quickly",
    "what is the best way to learn a new language",
    "why is the sky blue during the day?",
    "how can i improve my writing skills",
    "what are the best books to read this year",
    "is it possible to learn to play the piano at forty",
]


def write_vocab(folder, words):
    (folder / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + words) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(iter(SENTENCES * 20), vocab_size=300)


def test_specials_come_first(trained):
    for algorithm in ("wordpiece", "bpe"):
        tok = train_tokenizer(iter(SENTENCES), vocab_size=400, algorithm=algorithm)
        assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
        assert tok.vocab_size == len(tok) > 5


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe"])
def test_round_trip(algorithm):
    tok = train_tokenizer(iter(SENTENCES * 20), vocab_size=400, algorithm=algorithm)
    for s in SENTENCES + ["how do i read books", "what is it?"]:
        ids = tok.encode(s)
        assert tok.cls_id not in ids and tok.sep_id not in ids  # no special tokens added
        assert tok.decode(ids) == s
    assert tok.decode(tok.encode("How   do I  LEARN Python")) == "how do i learn python"


def test_encode_batch_matches_encode(trained):
    assert trained.encode_batch(SENTENCES) == [trained.encode(s) for s in SENTENCES]


def test_decode_cuts_at_sep_and_pad_and_drops_specials(tmp_path):
    tok = load_bert_vocab(write_vocab(tmp_path, ["hello", "world", "again"]))
    h, w, a = (tok.hf.token_to_id(t) for t in ("hello", "world", "again"))
    assert tok.decode([tok.cls_id, h, tok.mask_id, w, tok.sep_id, a, tok.sep_id]) == "hello world"
    assert tok.decode([h, w, tok.pad_id, a]) == "hello world"
    assert tok.decode(torch.tensor([tok.cls_id, tok.sep_id, h])) == ""
    batch = torch.tensor([[tok.cls_id, h, tok.sep_id, w], [a, a, tok.pad_id, tok.pad_id]])
    assert tok.decode_batch(batch) == ["hello", "again again"]


def test_wordpiece_pieces_and_punctuation_are_joined(tmp_path):
    tok = load_bert_vocab(write_vocab(tmp_path, ["play", "##ing", "##ed", "we", "are", "?", ",", "'", "s", "it"]))
    ids = tok.encode("We are playing, it's played?")
    tokens = [tok.hf.id_to_token(i) for i in ids]
    assert tokens == ["we", "are", "play", "##ing", ",", "it", "'", "s", "play", "##ed", "?"]
    assert tok.decode(ids) == "we are playing, it's played?"


def test_save_load_identical(trained, tmp_path):
    path = trained.save(str(tmp_path / "ckpt"))
    assert path.endswith("tokenizer.json") and json.load(open(path))
    for loaded in (Tokenizer.load(str(tmp_path / "ckpt")), Tokenizer.load(path)):
        assert loaded.encode_batch(SENTENCES) == trained.encode_batch(SENTENCES)
        assert loaded.vocab_size == trained.vocab_size
        assert loaded.to_str() == trained.to_str()


def test_missing_bert_vocab_gives_guidance(tmp_path):
    for path in (str(tmp_path / "nowhere"), str(tmp_path), None):
        with pytest.raises(TokenizerError) as e:
            load_bert_vocab(path)
        msg = str(e.value)
        for part in ("--vocab bert", "--vocab_path", "vocab.txt", "save_pretrained",
                     "nothing is downloaded", "--vocab own"):
            assert part in msg
    with pytest.raises(TokenizerError, match="vocab_path"):
        build_tokenizer("bert", str(tmp_path), vocab_path=None)


def test_handmade_bert_vocab(tmp_path):
    words = ["the", "cat", "sat", "on", "mat", "."]
    tok = load_bert_vocab(str(write_vocab(tmp_path, words) / "vocab.txt"))
    assert tok.pad_id == 0 and tok.sep_id == 3 and tok.vocab_size == 11
    assert tok.encode("The cat sat on the MAT.") == [5, 6, 7, 8, 5, 9, 10]
    assert tok.encode("the dog") == [5, tok.unk_id]
    cased = load_bert_vocab(str(tmp_path), lowercase=False)
    assert cased.encode("The cat") == [tok.unk_id, 6]


def test_vocab_without_specials_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n")
    with pytest.raises(TokenizerError, match=r"\[CLS\]"):
        load_bert_vocab(str(tmp_path))


def test_build_own_trains_on_train_split(tmp_path):
    with open(tmp_path / "train.jsonl", "w") as f:
        for s in SENTENCES * 5:
            f.write(json.dumps({"src": s, "trg": "zebra " + s}) + "\n")
    tok = build_tokenizer("own", str(tmp_path), vocab_size=300)
    assert tok.hf.token_to_id("zebra") is not None  # seen only in trg
    assert tok.decode(tok.encode("zebra " + SENTENCES[0])) == "zebra " + SENTENCES[0]
    with pytest.raises(TokenizerError, match="unknown"):
        build_tokenizer("gpt", str(tmp_path))


# real strings: KJV/WEB verses and QQP questions with apostrophes, hyphens and punctuation
REAL = [
    "And they went three days' journey into the wilderness, and found no water.",
    "Don't you know that the Lord's anger is kindled against you?",
    "How do I become a well-known writer in my 30's?",
    "What's the best way to learn machine-learning from scratch?",
    "Then Jacob's sons answered Shechem and Hamor his father deceitfully;",
    "Is it safe to travel to Paris - or anywhere in Europe - right now?",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_detokenizing_keeps_apostrophes_hyphens_and_punctuation(lowercase):
    tok = train_tokenizer(iter(REAL * 30), vocab_size=600, lowercase=lowercase)
    for s in REAL:
        want = s.lower() if lowercase else s
        # the BERT pre-tokenizer splits " - " and "-" alike; a spaced dash comes back joined
        want = want.replace(" - ", "-")
        assert tok.decode(tok.encode(s)) == want


def test_a_continuation_piece_at_the_start_does_not_leak():
    tok = train_tokenizer(iter(REAL * 30), vocab_size=600)
    vocab = tok.hf.get_vocab()
    piece = next(p for p in sorted(vocab) if p.startswith("##") and len(p) > 3)
    word = tok.encode("wilderness")
    out = tok.decode([vocab[piece]] + word)
    assert not out.startswith("#") and out.endswith("wilderness") and out.startswith(piece[2:])


def test_cased_vocabulary_keeps_case_and_costs_little(tmp_path):
    texts = REAL * 30
    cased = train_tokenizer(iter(texts), vocab_size=600, lowercase=False)
    assert cased.decode(cased.encode("Then the Lord's anger")) == "Then the Lord's anger"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"src": s, "trg": s}) + "\n" for s in REAL))
    tok = build_tokenizer("own", str(tmp_path), vocab_size=300, lowercase=False)
    assert tok.decode(tok.encode("Jacob")) == "Jacob"
