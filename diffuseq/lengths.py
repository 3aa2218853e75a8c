"""Where a target lies when decoding: the one length-region rule.

Training with a length head sees each target as its tokens, its [SEP] and --length_margin [PAD]s
(diffusion.target_region); the positions after them are hidden. Decoding gives each input the same
kind of region, [CLS] x [SEP] + n + [SEP] + margin positions, with n the length the head predicts
from the source ("predicted"), the source's own length ("source", which needs no head), or the
longer of the two ("longer"); "full" fills the whole sequence, as the original does.
"""
import torch

LENGTHS = ("predicted", "source", "longer", "full")


class LengthRule:
    """The region rule of one model: its length head, and the margin it was trained with."""

    def __init__(self, model, trained_margin):
        self.model, self.trained_margin = model, trained_margin

    def margin(self, given=None):
        """The positions after the target length a region gets: `given`, or the margin the model
        was trained with (4 for models trained on every position)."""
        if given is not None:
            return given
        return self.trained_margin if self.trained_margin >= 0 else 4

    @torch.no_grad()
    def predict(self, ids, mask):
        """Predicted number of target tokens [B] (the length head's most likely class)."""
        return self.model.length_logits(ids, mask).argmax(-1)

    def cuts(self, lengths):
        """Whether `lengths` cuts the target to a region: "predicted" and "longer" for a model
        with a length head, "source" for any; "full" (and the others, without a head) fills the
        whole sequence."""
        if lengths not in LENGTHS:
            raise ValueError(f"unknown lengths {lengths!r}; choose one of {', '.join(LENGTHS)}")
        return lengths == "source" or (lengths != "full" and self.model.cfg.length_head)

    def end(self, ids, mask, margin, lengths="predicted", offset=0):
        """Where each input's region ends [B]: its source ([CLS] x [SEP]) + its target length
        (+ offset, at least 1) + [SEP] + margin (not bounded by the sequence)."""
        src = (1 - mask).sum(1)
        n = src - 2 if lengths == "source" else self.predict(ids, mask)
        if lengths == "longer":
            n = torch.maximum(n, src - 2)
        if offset:
            n = (n + offset).clamp(min=1)
        return src + n + 1 + margin

    def cut(self, ids, mask, margin, lengths="predicted", offset=0):
        """A batch cut to its regions (target lengths + offset): (ids, mask, keep) with L the
        longest region; keep [B, L] is False past each input's end."""
        end = self.end(ids, mask, margin, lengths, offset).clamp(max=ids.shape[1])
        Lb = int(end.max())
        keep = torch.arange(Lb, device=ids.device)[None, :] < end[:, None]
        return ids[:, :Lb], mask[:, :Lb], keep

    @torch.no_grad()
    def decode_lengths(self, layout, sources, references=None, margin=None, lengths="predicted", device="cpu",
                       chunk=1024):
        """The length each input is decoded at: [CLS] x [SEP] plus its target region when
        `lengths` cuts one, else the source alone (what tells such inputs apart)."""
        out = []
        for s in range(0, len(sources), chunk):
            ids, mask = layout.inputs(sources[s:s + chunk], None if references is None else references[s:s + chunk])
            if self.cuts(lengths):
                n = self.end(ids.to(device), mask.to(device), self.margin(margin), lengths).cpu()
            else:
                n = (1 - mask).sum(1)
            out += n.tolist()
        return out
