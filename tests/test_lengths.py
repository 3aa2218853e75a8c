"""diffuseq/lengths.py: the length-region rule, against its definition."""
import pytest
import torch

from diffuseq.lengths import LengthRule


class Head:
    """A model stand-in whose length head predicts fixed lengths."""

    def __init__(self, n, length_head=True):
        self.n = torch.tensor(n)
        self.cfg = type("Cfg", (), {"length_head": length_head})()

    def length_logits(self, ids, mask):
        return torch.nn.functional.one_hot(self.n, 40).float()


def batch(src_lens, L=30):
    mask = torch.ones(len(src_lens), L, dtype=torch.long)
    for i, n in enumerate(src_lens):
        mask[i, :n] = 0
    return torch.zeros(len(src_lens), L, dtype=torch.long), mask


@pytest.mark.parametrize("lengths,want", [("predicted", [6 + 3 + 1 + 2, 4 + 9 + 1 + 2]),
                                          ("source", [6 + 4 + 1 + 2, 4 + 2 + 1 + 2]),
                                          ("longer", [6 + 4 + 1 + 2, 4 + 9 + 1 + 2])])
def test_region_end_is_source_plus_length_plus_sep_plus_margin(lengths, want):
    rule = LengthRule(Head([3, 9]), trained_margin=8)
    ids, mask = batch([6, 4])  # [CLS] x [SEP]: 4 and 2 source tokens
    assert rule.end(ids, mask, 2, lengths).tolist() == want
    ids_c, mask_c, keep = rule.cut(ids, mask, 2, lengths)
    assert ids_c.shape[1] == keep.shape[1] == max(want)
    assert keep.sum(1).tolist() == want and torch.equal(mask_c, mask[:, :max(want)])


def test_a_region_never_runs_past_the_sequence():
    rule = LengthRule(Head([35]), trained_margin=8)
    ids, mask = batch([6])
    assert int(rule.end(ids, mask, 8)) == 6 + 35 + 1 + 8
    _, _, keep = rule.cut(ids, mask, 8)
    assert keep.shape[1] == 30 and keep.all()


def test_which_rules_cut_and_the_margin():
    with_head, without = LengthRule(Head([1]), 8), LengthRule(Head([1], length_head=False), -1)
    assert [with_head.cuts(x) for x in ("predicted", "source", "longer", "full")] == [True, True, True, False]
    assert [without.cuts(x) for x in ("predicted", "source", "longer", "full")] == [False, True, False, False]
    assert with_head.margin() == 8 and without.margin() == 4 and without.margin(0) == 0
    with pytest.raises(ValueError, match="unknown lengths 'short'"):
        with_head.cuts("short")
