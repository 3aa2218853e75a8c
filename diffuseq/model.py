"""The denoiser: a transformer encoder that maps (z_t, t) to a prediction of z_0.

z_t [B, L, D] (D = hidden_dim, the word-embedding size) is projected up to the transformer
width, added to learned position embeddings and to an MLP of the sinusoidal embedding of t,
run through post-LayerNorm encoder layers (BERT's layout, so BERT weights can initialise it),
and projected back down to D. Logits over the vocabulary come from the tied word embeddings
(plus a learned bias with `lm_bias`, as in the original's output head).

Three options make the source cheap to use:
  segment_positions  the target's positions restart at 0 where y begins, and a segment embedding
                     tells x from y: y_i and x_i share a position, so copying or a monotone
                     rewrite is a match of positions, whatever the length of x;
  self_cond          the previous estimate of z_0 is a second input (zeros when there is none),
                     so each call refines the last one instead of starting over;
  length_head        a small classifier predicts the number of target tokens from the source
                     alone, so decoding can give each example a target region of about that
                     length instead of filling the whole sequence with [PAD]s.

With such regions (`keep` in forward) much of a batch is left out; on CPU the denoiser then packs
the kept positions of several examples into one row (Packing), so it computes them alone.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PRESETS = {
    "tiny": dict(width=256, layers=3, heads=4, ffn=1024),
    "small": dict(width=512, layers=6, heads=8, ffn=2048),
    "base": dict(width=768, layers=12, heads=12, ffn=3072),  # the BERT-base shape
}


@dataclass
class DenoiserConfig:
    vocab_size: int
    seq_len: int = 128
    hidden_dim: int = 128
    width: int = 256
    layers: int = 3
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    diffusion_steps: int = 2000
    learned_mean_embed: bool = False
    grad_checkpoint: bool = False
    segment_positions: bool = False
    self_cond: bool = False
    lm_bias: bool = False
    length_head: bool = False
    proj_when_needed: bool = False  # the original's rule: no up/down projection when hidden_dim == width
    m_init: str = "zeros"  # the absorbing state m at the start: zeros, or "normal" N(0, 1/D) (the original's)
    embed_std: float = 1.0  # std of the word embeddings at the start

    def to_dict(self):
        return asdict(self)


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of (possibly fractional) timesteps t [B] -> [B, dim]: cosines then
    sines of half = dim // 2 frequencies, and one zero column when dim is odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.dropout = cfg.dropout

    def forward(self, h, attn_mask=None):
        """h [B, L, W]; attn_mask (bool, broadcastable to [B, heads, L, L]): which keys each
        query may see (None: all)."""
        B, L, W = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(a.transpose(1, 2).reshape(B, L, W))


class Layer(nn.Module):
    """One post-LN encoder layer: h = LN(h + Attn(h)); h = LN(h + FFN(h))."""

    def __init__(self, cfg):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.width, eps=1e-12)
        self.fc1 = nn.Linear(cfg.width, cfg.ffn)
        self.fc2 = nn.Linear(cfg.ffn, cfg.width)
        self.ln2 = nn.LayerNorm(cfg.width, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, attn_mask=None):
        h = self.ln1(h + self.drop(self.attn(h, attn_mask)))
        return self.ln2(h + self.drop(self.fc2(F.gelu(self.fc1(h)))))


class Packing:
    """The kept positions of a batch (keep [B, L], True on a prefix of each row) laid out in R
    rows of C positions (see plan): each row holds whole examples one after another, placed
    longest first in the first row with room, so a batch of mixed lengths runs as R x C
    positions instead of B x L. Attention stays within an example (attn_mask), so every kept
    position computes what it computes unpacked.

    slot   [R, C] index of each packed position in the flattened batch (B * L for an empty slot)
    owner  [R, C] the example each packed position belongs to (-1 for an empty slot)
    offset [R, C] its position within its example's row (0 for an empty slot)"""

    # packing pays only where it saves a good part of the batch: the rows it runs instead must
    # be at most this share of B x L
    MAX_SHARE = 0.85

    def __init__(self, slot, owner, offset, B, L):
        self.slot, self.owner, self.offset, self.B, self.L = slot, owner, offset, B, L
        self._mask = None
        R, C = slot.shape
        flat = slot.reshape(-1)
        used = flat < B * L
        # where each batch position is in the packed rows (R * C: a zero row appended)
        self.inverse = torch.full((B * L,), R * C, dtype=torch.long, device=slot.device)
        self.inverse[flat[used]] = torch.arange(R * C, device=slot.device)[used]

    @staticmethod
    def _rows(lengths, order, C):
        """First-fit of the examples (in `order`) into rows of C positions: lists of examples."""
        rows = []  # [room left, examples]
        for i in order:
            for row in rows:
                if row[0] >= lengths[i]:
                    row[0] -= lengths[i]
                    row[1].append(i)
                    break
            else:
                rows.append([C - lengths[i], [i]])
        return [members for _, members in rows]

    @classmethod
    def plan(cls, keep):
        """A Packing of keep [B, L], or None where packing would not save MAX_SHARE. The row
        length C is the longest example's, or up to twice that where longer rows fill better
        (in a batch of lengths 30-55, rows of 55 hold one example each, rows of 110 two)."""
        B, L = keep.shape
        lengths = keep.sum(1).tolist()
        longest = max(lengths)
        if longest == 0:
            return None
        order = sorted(range(B), key=lambda i: -lengths[i])
        options = sorted({longest * k // 4 for k in (4, 5, 6, 8)})
        C, rows = min(((C, cls._rows(lengths, order, C)) for C in options), key=lambda o: len(o[1]) * o[0])
        if len(rows) * C > cls.MAX_SHARE * B * L:
            return None
        slot = torch.full((len(rows), C), B * L, dtype=torch.long)
        owner = torch.full((len(rows), C), -1, dtype=torch.long)
        offset = torch.zeros((len(rows), C), dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for i in members:
                n = lengths[i]
                slot[r, at:at + n] = i * L + torch.arange(n)
                owner[r, at:at + n] = i
                offset[r, at:at + n] = torch.arange(n)
                at += n
        dev = keep.device
        return cls(slot.to(dev), owner.to(dev), offset.to(dev), B, L)

    def gather(self, x):
        """x [B, L, ...] -> the packed rows [R, C, ...] (empty slots read position 0)."""
        flat = x.reshape(self.B * self.L, *x.shape[2:])
        return flat[self.slot.clamp(max=self.B * self.L - 1)]

    def scatter(self, y):
        """Packed rows y [R, C, ...] -> [B, L, ...], zeros where keep is False."""
        flat = y.reshape(-1, *y.shape[2:])
        flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
        return flat[self.inverse].reshape(self.B, self.L, *y.shape[2:])

    def example_index(self):
        """[R, C] the example of each packed position (0 for an empty slot), to gather [B, ...]."""
        return self.owner.clamp(min=0)

    def attn_mask(self):
        """[R, 1, C, C] bool: a position sees the positions of its own example (empty slots see
        each other, so no row of the mask is empty)."""
        if self._mask is None:
            self._mask = (self.owner[:, :, None] == self.owner[:, None, :]).unsqueeze(1)
        return self._mask


class Denoiser(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        D, W = cfg.hidden_dim, cfg.width
        self.word_embedding = nn.Embedding(cfg.vocab_size, D)
        nn.init.normal_(self.word_embedding.weight, std=cfg.embed_std)  # 1: roughly unit scale, like the noise
        self.time_embed = nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, W))
        # the original builds the projections only where the sizes differ (proj_when_needed)
        skip = cfg.proj_when_needed and D == W
        self.input_up_proj = nn.Identity() if skip and not cfg.self_cond else nn.Sequential(
            nn.Linear(2 * D if cfg.self_cond else D, W), nn.Tanh(), nn.Linear(W, W))
        self.position_embeddings = nn.Embedding(cfg.seq_len, W)
        self.segment_embeddings = nn.Embedding(2, W) if cfg.segment_positions else None
        self.ln = nn.LayerNorm(W, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.pack = None  # pack rows where keep leaves positions out: None = on CPU (see forward)
        self._packed = None  # (keep, its Packing) of the last call
        self.output_down_proj = nn.Identity() if skip else nn.Sequential(nn.Linear(W, W), nn.Tanh(), nn.Linear(W, D))
        # DiffuSeq-v2's soft absorbing state: the y part is noised toward it
        self.mean_embed = nn.Parameter(torch.zeros(D)) if cfg.learned_mean_embed else None
        if self.mean_embed is not None and cfg.m_init == "normal":
            nn.init.normal_(self.mean_embed, std=D ** -0.5)
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.lm_bias else None
        if cfg.length_head:  # source -> number of target tokens, one class per length
            self.length_feat = nn.Linear(2 * D, W)
            self.length_of_x = nn.Embedding(cfg.seq_len + 1, W)
            self.length_out = nn.Sequential(nn.GELU(), nn.Linear(W, cfg.seq_len))

    def get_embeds(self, ids):
        """Token ids [B, L] -> embeddings [B, L, D]."""
        return self.word_embedding(ids)

    def get_logits(self, z):
        """Embeddings [B, L, D] -> logits [B, L, V] through the tied word embeddings."""
        logits = z @ self.word_embedding.weight.to(z.dtype).t()
        return logits if self.lm_bias is None else logits + self.lm_bias.to(logits.dtype)

    def positions(self, mask, L, pack=None):
        """Position embeddings [L, W] or, with segment_positions, [B, L, W]: position and segment
        embeddings with the positions of y (mask [B, L], 1 on y) counted from 0. With a Packing,
        those of the packed rows [R, C, W]."""
        if self.segment_embeddings is None:
            if pack is None:
                return self.position_embeddings.weight[:L]
            return self.position_embeddings(pack.offset)
        if mask is None:
            raise ValueError("a model with segment_positions needs the target mask")
        seg = mask.long()
        src_len = seg.argmax(1, keepdim=True)  # where y begins (its first 1)
        pos = torch.arange(L, device=mask.device).expand_as(seg) - seg * src_len
        if pack is not None:
            pos, seg = pack.gather(pos), pack.gather(seg)
        return self.position_embeddings(pos) + self.segment_embeddings(seg)

    def length_logits(self, ids, mask):
        """Logits [B, seq_len] of the number of target tokens (without its [SEP]), from the source
        alone: the mean and max of its word embeddings and its length. ids, mask [B, L]."""
        x = (1 - mask).unsqueeze(-1).to(self.word_embedding.weight.dtype)
        emb = self.word_embedding(ids)
        n = x.sum(1).clamp(min=1)
        pooled = torch.cat([(emb * x).sum(1) / n, emb.masked_fill(x == 0, -1e4).amax(1)], -1)
        h = self.length_feat(pooled) + self.length_of_x(n.squeeze(-1).long().clamp(max=self.cfg.seq_len))
        return self.length_out(h)

    def forward(self, zt, t, mask=None, z0_prev=None, keep=None):
        """zt [B, L, D], t [B] training timesteps (may be fractional) -> predicted z_0 [B, L, D].

        mask [B, L] (1 on y) places the segments (needed with segment_positions); z0_prev
        [B, L, D] is the previous estimate of z_0 (with self_cond; None = zeros); keep [B, L]
        (bool, True on a prefix of each row) leaves the positions where it is False out: they
        are hidden from attention and their output is not to be read.

        Where `keep` leaves much of the batch out, its rows are packed (see Packing): the kept
        positions of several examples share a row, each attending only to its own. The outputs
        at kept positions are those of the unpacked batch; the others are zeros. `pack` (None:
        on CPU, outside torch.compile) says whether to pack."""
        B, L = zt.shape[:2]
        temb = self.time_embed(timestep_embedding(t * (1000.0 / self.cfg.diffusion_steps),
                                                  self.cfg.hidden_dim))
        if self.cfg.self_cond:
            zt = torch.cat([zt, torch.zeros_like(zt) if z0_prev is None else z0_prev.to(zt.dtype)], -1)
        pack = None
        if keep is not None and (self.pack if self.pack is not None else
                                 zt.device.type == "cpu" and not torch.compiler.is_compiling()):
            # a sampler calls the model many times with the same keep: plan its rows once
            if self._packed is None or self._packed[0] is not keep:
                self._packed = (keep, Packing.plan(keep))
            pack = self._packed[1]
        if pack is None:
            attn_mask = None if keep is None else keep[:, None, None, :]
            h = self.input_up_proj(zt) + self.positions(mask, L) + temb.unsqueeze(1)
        else:
            attn_mask = pack.attn_mask()
            h = self.input_up_proj(pack.gather(zt)) + self.positions(mask, L, pack) + temb[pack.example_index()]
        h = self.drop(self.ln(h))
        for layer in self.layers:
            if self.cfg.grad_checkpoint and self.training:
                h = checkpoint(layer, h, attn_mask, use_reentrant=False)
            else:
                h = layer(h, attn_mask)
        out = self.output_down_proj(h)
        return out if pack is None else pack.scatter(out)

    def num_params(self, exclude_embeddings=False):
        n = sum(p.numel() for p in self.parameters())
        return n - self.word_embedding.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, seq_len=None):
        """Forward multiply-adds x 2 per token: every matmul of the network plus attention and
        the logits; used for model FLOPs utilisation (training = 3x this)."""
        c, L = self.cfg, seq_len or self.cfg.seq_len
        W, D = c.width, c.hidden_dim
        per_layer = 2 * (4 * W * W + 2 * W * c.ffn) + 2 * 2 * L * W  # projections + QK^T and AV
        return c.layers * per_layer + 2 * (D * W + W * W) * 2 + 2 * D * c.vocab_size


# our layer's modules -> BERT's (HF BertLayer), beside query/key/value, which stack into attn.qkv
BERT_LAYER = (("attn.out", "attention.output.dense"), ("ln1", "attention.output.LayerNorm"),
              ("fc1", "intermediate.dense"), ("fc2", "output.dense"), ("ln2", "output.LayerNorm"))


def bert_layer(sd, prefix, i):
    """Our tensors of layer i from a BERT encoder's state dict `sd` whose layer i is named
    `<prefix><i>.` (KeyError when one is missing)."""
    p, q = f"{prefix}{i}.", f"layers.{i}."
    out = {}
    for kind in ("weight", "bias"):
        out[f"{q}attn.qkv.{kind}"] = torch.cat([sd[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
        for ours, theirs in BERT_LAYER:
            out[f"{q}{ours}.{kind}"] = sd[f"{p}{theirs}.{kind}"]
    return out


def load_bert_encoder(model, path):
    """Initialise the encoder layers and position embeddings from local BERT weights.

    `path` is a folder (or file) with `pytorch_model.bin` or `model.safetensors` as saved by
    BERT implementations. The transformer shape must match (e.g. preset `base` for bert-base).
    """
    import os
    files = [path] if os.path.isfile(path) else [
        os.path.join(path, f) for f in ("model.safetensors", "pytorch_model.bin")]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise FileNotFoundError(
            f"--init_from {path}: no model.safetensors or pytorch_model.bin there; give a local "
            "folder with BERT weights (nothing is downloaded)")
    if files[0].endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(files[0])
    else:
        sd = torch.load(files[0], map_location="cpu", weights_only=True)
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    new = {}
    for i in range(model.cfg.layers):
        try:
            new.update(bert_layer(sd, "encoder.layer.", i))
        except KeyError as e:
            raise ValueError(f"--init_from {path}: not a BERT checkpoint of >= {model.cfg.layers} "
                             f"layers (missing {e})") from None
    pos = sd.get("embeddings.position_embeddings.weight")
    if pos is not None and pos.shape[0] >= model.cfg.seq_len:
        new["position_embeddings.weight"] = pos[: model.cfg.seq_len]
    own = model.state_dict()
    for k, v in new.items():
        if own[k].shape != v.shape:
            raise ValueError(f"--init_from {path}: {k} has shape {tuple(v.shape)} in the file but "
                             f"{tuple(own[k].shape)} here; pick the preset matching the checkpoint")
    model.load_state_dict(new, strict=False)
    return sorted(new)
