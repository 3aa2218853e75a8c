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

from bench_quality import DATA, ensure_data

from diffuseq.data.dataset import read_pairs
from diffuseq.tuning import copy_line


@dataclass(frozen=True)
class Split:
    data: str  # the key of bench_quality.DATA, which holds the folder and the sequence length
    choose: tuple  # (file, first, last) of the pairs that choose
    test: tuple  # (file, first, last) of the pairs that are scored

    @property
    def folder(self):
        """The data folder (bench_quality.ensure_data: the Bible pairs are built when missing)."""
        return ensure_data(self.data)

    @property
    def seq_len(self):
        return DATA[self.data][2]


SPLITS = {
    "bible": Split("bible", ("valid", 0, 200), ("test", 0, 500)),
    "qqp": Split("qqp", ("valid", 0, 100), ("valid", 100, 200)),
    "iwslt": Split("iwslt", ("valid", 0, 250), ("valid", 250, 500)),
}


def load_split_pairs(data, part):
    """[(src, trg)] of part "train", "choose" or "test" of the data set `data`."""
    spec = SPLITS[data]
    file, first, last = ("train", 0, None) if part == "train" else getattr(spec, part)
    return list(read_pairs(os.path.join(spec.folder, f"{file}.jsonl")))[first:last]


def score(hyps, pairs):
    """Mean sentence BLEU, corpus BLEU, ROUGE-L, ... of hyps against the pairs' references (the
    project's scorer, as the tuning grid and the copy line)."""
    return copy_line(hyps, [r for _, r in pairs])
