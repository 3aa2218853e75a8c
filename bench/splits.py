"""The splits every quality table of docs/quality.md uses, one definition for the diffusion runs
and the baselines: which pairs train, which choose (checkpoint and decoding), which are scored.

- bible: the train split; the first 200 valid verses choose; the first 500 test verses are scored.
- qqp: qqp_small's 1,847 train pairs; the first 100 of its 200 valid pairs choose, the last 100
  are scored (qqp_small has no test split).
- iwslt: iwslt14_small's 6,783 train pairs; the first 250 of its 500 valid pairs choose, the last
  250 are scored.
"""
import os
from dataclasses import dataclass

from common import ROOT

from diffuseq.data.dataset import read_pairs
from diffuseq.tuning import copy_line


@dataclass(frozen=True)
class Split:
    folder: str
    seq_len: int
    choose: tuple  # (file, first, last) of the pairs that choose
    test: tuple  # (file, first, last) of the pairs that are scored


SPLITS = {
    "bible": Split("datasets/bible_kjv_web", 160, ("valid", 0, 200), ("test", 0, 500)),
    "qqp": Split("../shared/data/qqp_small", 64, ("valid", 0, 100), ("valid", 100, 200)),
    "iwslt": Split("../shared/data/iwslt14_small", 128, ("valid", 0, 250), ("valid", 250, 500)),
}


def load_split_pairs(data, part):
    """[(src, trg)] of part "train", "choose" or "test" of the data set `data`."""
    spec = SPLITS[data]
    file, first, last = ("train", 0, None) if part == "train" else getattr(spec, part)
    path = os.path.join(ROOT, spec.folder, f"{file}.jsonl")
    if data == "bible" and not os.path.isfile(path):
        import subprocess
        import sys
        subprocess.run([sys.executable, "-m", "diffuseq.data.bible", "--src", "kjv", "--trg", "web",
                        "--out", os.path.join(ROOT, spec.folder)], check=True, cwd=ROOT)
    return list(read_pairs(path))[first:last]


def score(hyps, pairs):
    """Mean sentence BLEU, corpus BLEU, ROUGE-L, ... of hyps against the pairs' references (the
    project's scorer, as the tuning grid and the copy line)."""
    return copy_line(hyps, [r for _, r in pairs])
