"""How a decoding input is laid out for the denoiser, and read back: source strings -> token ids
and the target mask, the source laid over the target region (a source start), and generated ids
-> text. Training lays its pairs out with the same rule (data.dataset.make_input).

Two layouts (--layout): ours, [CLS] x [SEP] y [SEP]; the original DiffuSeq's,
[CLS] x [SEP] [SEP] [CLS] y [SEP]. Either way the target part is everything from the end of the
source on, padding included."""
import torch

from .data.dataset import make_input


class Layout:
    def __init__(self, tokenizer, seq_len, kind="ours"):
        self.tokenizer, self.seq_len, self.kind = tokenizer, seq_len, kind

    def inputs(self, sources, references=None):
        """Token ids and masks [B, L] of [CLS] x [SEP] (the original layout: [CLS] x [SEP] [SEP])
        followed by the target region. The source is truncated as in training (to leave room for
        the reference when given)."""
        tok = self.tokenizer
        xs = tok.encode_batch(sources)
        ys = tok.encode_batch(references) if references is not None else [[]] * len(xs)
        ids = torch.full((len(xs), self.seq_len), tok.pad_id, dtype=torch.long)
        mask = torch.ones_like(ids)
        for i, (x, y) in enumerate(zip(xs, ys)):
            z, src_len, _ = make_input(x, y, self.seq_len, tok.cls_id, tok.sep_id, self.kind)
            ids[i, :src_len] = torch.tensor(z[:src_len])
            mask[i, :src_len] = 0
        return ids, mask

    def laid_references(self, sources, references, cleanup="original"):
        """The references as their pairs are laid (cut to seq_len together with the source) and
        read back as text: what the original's decoders write as the reference."""
        tok = self.tokenizer
        rows = []
        for x, y in zip(tok.encode_batch(sources), tok.encode_batch(references)):
            z, src_len, _ = make_input(x, y, self.seq_len, tok.cls_id, tok.sep_id, self.kind)
            rows.append(list(z[src_len:]))
        return tok.decode_batch(rows, cleanup)

    def source_start(self, ids, mask, keep=None):
        """The source laid over the target region, for decoding as an edit of the source:
        position i of y gets token i of x (with segment positions, y_i and x_i share a position),
        then [SEP], then [PAD]s, cut to the region (the original layout: [CLS] first, as its
        targets begin). ids, mask [B, L] -> ids [B, L]."""
        tok = self.tokenizer
        region = mask.bool() if keep is None else mask.bool() & keep
        n = (1 - mask).sum(1, keepdim=True)  # source part: [CLS] x [SEP] ([SEP] again: original)
        first = 1 if self.kind == "original" else 0  # the original's targets begin with [CLS]
        lx = n - (3 if self.kind == "original" else 2)  # tokens of x
        rel = torch.arange(ids.shape[1], device=ids.device)[None, :] - n  # place in the region
        from_x = ids.gather(1, (rel - first + 1).clamp(0, ids.shape[1] - 1))
        fill = torch.where(rel < first, tok.cls_id, torch.where(rel < first + lx, from_x, torch.where(
            rel == first + lx, tok.sep_id, tok.pad_id)))
        return torch.where(region, fill.to(ids.dtype), ids)

    def detokenize(self, out, mask, cleanup="cut"):
        """Token ids [B, L] -> the generated text of each row (its target region); cleanup: see
        Tokenizer.decode_batch ("original" keeps what follows the first [SEP], as the original)."""
        rows = [row[m.bool()].tolist() for row, m in zip(out.cpu(), mask.cpu())]
        return self.tokenizer.decode_batch(rows, cleanup)
