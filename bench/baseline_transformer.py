"""The line a diffusion model has to beat besides copying: a small autoregressive encoder-decoder
Transformer trained from scratch on the same pairs, with the same tokenizer, for the same minutes,
decoded greedily and with a beam of 4.

    taskset -c 0 python bench/baseline_transformer.py --data bible --minutes 15 --threads 1
    python bench/baseline_transformer.py --data qqp --minutes 15 --out bench/quality/baseline_qqp.json

The checkpoint kept is the one with the lowest validation loss (on the split the diffusion runs
choose their decoding on); the scores are on the held-out split of bench/splits.py. Outputs are
written as DiffuSeq's jsonl ({"source", "reference", "recover"}) next to the JSON record, so
scripts/eval_seq2seq.py scores them too. Decoding keeps a key-value cache, so each new token costs
one position (beam_search(..., cache=False) recomputes the whole prefix, with the same outputs).
bench/tune_transformer.py chooses --lr and --dropout on the choose pairs.
"""
import argparse
import copy
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import ROOT
from splits import SPLITS, load_split_pairs, score

from diffuseq.tokenizer import build_tokenizer


class Attention(nn.Module):
    """nn.MultiheadAttention (same parameters, initialisation and maths) with the keys and values
    computed apart from the queries, so that a decoder can cache them."""

    def __init__(self, width, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # query, key, value rows
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # in nn.MultiheadAttention's order: the same initial weights
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x, i):
        """Query (i=0), keys (1) or values (2) of x [B, n, width], split into heads: [B, heads, n, width/heads]."""
        w, b = self.in_proj_weight.chunk(3)[i], self.in_proj_bias.chunk(3)[i]
        return F.linear(x, w, b).unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, x):
        return self.project(x, 1), self.project(x, 2)

    def forward(self, x, k, v, mask=None, causal=False):
        """x [B, n, width] attends to the keys and values k, v [B, heads, m, width/heads]; mask [B, 1, 1, m]
        is True where it may."""
        y = F.scaled_dot_product_attention(self.project(x, 0), k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """nn.TransformerDecoderLayer(norm_first=True, activation relu) written out, with its parameter
    names, so that it can attend to the cached keys and values of earlier positions."""

    def __init__(self, width, heads, ffn, dropout):
        super().__init__()
        self.self_attn = Attention(width, heads, dropout)
        self.multihead_attn = Attention(width, heads, dropout)
        self.linear1, self.linear2 = nn.Linear(width, ffn), nn.Linear(ffn, width)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory_kv, memory_mask, past=None):
        """x [B, n, width]: the whole prefix (past None: causal attention) or the one position after the
        past keys and values. Returns the new x and the keys and values of all positions so far."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        x = x + self.drop(self.self_attn(h, k, v, causal=past is None))
        x = x + self.drop(self.multihead_attn(self.norm2(x), *memory_kv, memory_mask))
        x = x + self.drop(self.linear2(self.drop(F.relu(self.linear1(self.norm3(x))))))
        return x, (k, v)


class Cache:
    """What decoding one more position needs of the earlier ones, per decoder layer: the keys and
    values of the memory (computed once) and of the positions decoded so far (one more per step)."""

    def __init__(self, memory_kv):
        self.memory_kv = memory_kv
        self.past = [None] * len(memory_kv)

    @property
    def length(self):
        """Positions decoded so far."""
        return 0 if self.past[0] is None else self.past[0][0].shape[2]

    def reorder(self, rows):
        """Keep the batch rows `rows` (the surviving beams). The memory's rows stay: beams move only
        within their source, whose rows of the memory are all the same."""
        self.past = [(k[rows], v[rows]) for k, v in self.past]


class Seq2Seq(nn.Module):
    """Pre-norm encoder-decoder, one embedding table shared by source, target and output."""

    def __init__(self, vocab, width=128, layers=2, heads=4, ffn=512, dropout=0.1, max_len=256):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        nn.init.normal_(self.emb.weight, std=width ** -0.5)  # tied output: logits start near 0
        self.pos = nn.Embedding(max_len, width)
        enc = nn.TransformerEncoderLayer(width, heads, ffn, dropout, batch_first=True, norm_first=True)
        dec = DecoderLayer(width, heads, ffn, dropout)
        self.encoder = nn.TransformerEncoder(enc, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        # copies of one layer, as nn.TransformerDecoder makes them
        self.decoder = nn.ModuleList(copy.deepcopy(dec) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(width)
        self.scale = math.sqrt(width)

    def embed(self, ids, start=0):
        return self.emb(ids) * self.scale + self.pos(torch.arange(start, start + ids.shape[1], device=ids.device))

    def encode(self, src, pad):
        return self.encoder(self.embed(src), src_key_padding_mask=src == pad)

    def new_cache(self, memory):
        return Cache([layer.multihead_attn.keys_values(memory) for layer in self.decoder])

    def hidden(self, memory, src_pad, prefix, cache=None):
        """Decoder states [B, n, width] of the prefix positions. With a cache (new_cache), prefix is the
        one position after those the cache holds, and the cache takes its keys and values."""
        mask = ~src_pad[:, None, None, :]
        x = self.embed(prefix, 0 if cache is None else cache.length)
        for i, layer in enumerate(self.decoder):
            if cache is None:
                x, _ = layer(x, layer.multihead_attn.keys_values(memory), mask)
            else:
                x, cache.past[i] = layer(x, cache.memory_kv[i], mask, cache.past[i])
        return self.decoder_norm(x)

    def decode(self, memory, src_pad, prefix, cache=None):
        """Logits of the next token after each prefix position: [B, n, V]."""
        return self.hidden(memory, src_pad, prefix, cache) @ self.emb.weight.t()


def batches(pairs, tok, bsz, max_len, g):
    """Random batches of (source ids, target ids with [CLS] first and [SEP] last), padded."""
    order = torch.randperm(len(pairs), generator=g).tolist()
    for i in range(0, len(order) - bsz + 1, bsz):
        yield pad_batch([pairs[j] for j in order[i:i + bsz]], tok, max_len)


def pad_batch(pairs, tok, max_len):
    xs = tok.encode_batch([s for s, _ in pairs])
    ys = tok.encode_batch([t for _, t in pairs])
    xs = [x[:max_len - 1] + [tok.sep_id] for x in xs]
    ys = [[tok.cls_id] + y[:max_len - 2] + [tok.sep_id] for y in ys]

    def pad(rows):
        out = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out
    return pad(xs), pad(ys)


def loss_of(model, src, trg, pad, smoothing=0.0):
    h = model.hidden(model.encode(src, pad), src == pad, trg[:, :-1])
    want = trg[:, 1:]
    rows = want != pad  # vocabulary logits for the real target tokens only: they are most of the cost
    return F.cross_entropy(h[rows] @ model.emb.weight.t(), want[rows], label_smoothing=smoothing)


@torch.no_grad()
def beam_search(model, src, tok, beam=1, max_len=160, alpha=0.6, cache=True):
    """Beam search (beam=1: greedy) over a batch of sources; hypotheses end at [SEP] and are ranked
    by log-probability / length^alpha. Returns one id list per source. cache: each step decodes one
    position against the model's key-value cache (False, or a model without new_cache: the whole
    prefix); the outputs are the same."""
    B, pad = src.shape[0], tok.pad_id
    memory = model.encode(src, pad).repeat_interleave(beam, 0)
    src_pad = (src == pad).repeat_interleave(beam, 0)
    kv = model.new_cache(memory) if cache and hasattr(model, "new_cache") else None
    seqs = torch.full((B * beam, 1), tok.cls_id, dtype=torch.long)
    scores = torch.zeros(B, beam)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    done = torch.zeros(B * beam, dtype=torch.bool)
    limit = min(max_len, 2 * src.shape[1] + 10)
    for _ in range(limit):
        if kv is None:
            logits = model.decode(memory, src_pad, seqs)[:, -1]
        else:
            logits = model.decode(memory, src_pad, seqs[:, -1:], kv)[:, -1]
        logp = logits.float().log_softmax(-1)
        logp[done] = float("-inf")
        logp[done, pad] = 0.0  # a finished hypothesis only grows padding, at no cost
        V = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(B, beam * V)
        scores, idx = cand.topk(beam, -1)
        rows = (torch.arange(B)[:, None] * beam + idx // V).view(-1)
        nxt = (idx % V).view(-1, 1)
        seqs = torch.cat([seqs[rows], nxt], 1)
        if kv is not None and beam > 1:
            kv.reorder(rows)
        done = done[rows] | (nxt.squeeze(1) == tok.sep_id)
        if done.all():
            break
    lengths = ((seqs != pad) & (seqs != tok.cls_id)).sum(1).clamp(min=1).view(B, beam).float()
    best = (scores / lengths ** alpha).argmax(-1)
    out = []
    for b in range(B):
        row = seqs[b * beam + int(best[b]), 1:].tolist()
        out.append(row[:row.index(tok.sep_id)] if tok.sep_id in row else row)
    return out


def generate(model, pairs, tok, beam, max_len, bsz=50, cache=True):
    model.eval()
    outs = []
    for i in range(0, len(pairs), bsz):
        src, _ = pad_batch(pairs[i:i + bsz], tok, max_len)
        outs += tok.decode_batch(beam_search(model, src, tok, beam, max_len, cache=cache))
    return outs


def valid_loss(model, pairs, tok, max_len, bsz=50):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(pairs), bsz):
            src, trg = pad_batch(pairs[i:i + bsz], tok, max_len)
            total += float(loss_of(model, src, trg, tok.pad_id)) * len(src)
    model.train()
    return total / len(pairs)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(SPLITS), default="bible")
    p.add_argument("--minutes", type=float, default=15.0, help="training time (wall clock), validation included")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 when pinned with taskset)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=2, help="encoder layers = decoder layers")
    p.add_argument("--bsz", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    p.add_argument("--vocab_size", type=int, default=4000, help="as the small diffusion recipes")
    p.add_argument("--eval_every", type=int, default=250, help="steps between validation losses")
    p.add_argument("--max_examples", type=int, default=None, help="score only the first N held-out pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshots", type=float, nargs="*", default=[],
                   help="minutes at which to keep the model a run of that length would keep, and score it too "
                        "(the rate is constant after warm-up, so a long run passes through the shorter runs)")
    p.add_argument("--out", default=None, help="JSON record (default bench/quality/baseline_<data>.json)")
    return p


def train(a, tok, pairs, choose, max_len):
    """A model trained on pairs for a.minutes with the options of parser(), at the step of its lowest
    validation loss on the choose pairs; and the run's record (steps, best step, loss curve). At each of
    a.snapshots (minutes) the record's "snapshots" gains the model a run of that many minutes would
    have kept (its state dict under "state")."""
    torch.manual_seed(a.seed)
    model = Seq2Seq(tok.vocab_size, a.width, a.layers, dropout=a.dropout, max_len=2 * max_len + 16)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = 200
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    g = torch.Generator().manual_seed(a.seed)
    t0, step, best, curve = time.time(), 0, (float("inf"), None, 0), []
    marks, snapshots = sorted(m for m in a.snapshots if m < a.minutes), []
    while time.time() - t0 < a.minutes * 60:
        for src, trg in batches(pairs, tok, a.bsz, max_len, g):
            loss = loss_of(model, src, trg, tok.pad_id, a.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % a.eval_every == 0:
                v = valid_loss(model, choose, tok, max_len)
                curve.append((step, round(time.time() - t0, 1), round(v, 4)))
                print(f"step {step}  {time.time() - t0:.0f}s  train {loss.item():.3f}  valid {v:.3f}", flush=True)
                if v < best[0]:
                    best = (v, {k: x.clone() for k, x in model.state_dict().items()}, step)
            while marks and time.time() - t0 >= marks[0] * 60:
                state = best[1] or {k: x.clone() for k, x in model.state_dict().items()}
                snapshots.append({"minutes": marks.pop(0), "steps": step, "best_step": best[2],
                                  "best_valid_loss": best[0], "state": state})
            if time.time() - t0 >= a.minutes * 60:
                break
    train_s = time.time() - t0
    if best[1] is not None:
        model.load_state_dict(best[1])
    return model, {"steps": step, "best_step": best[2], "best_valid_loss": best[0], "train_s": round(train_s, 1),
                   "params": sum(x.numel() for x in model.parameters()), "curve": curve, "snapshots": snapshots}


def decode_all(model, held, tok, max_len, out):
    """Greedy and beam-4 scores of model on the held-out pairs, each decoding's outputs written
    next to the record out as <out>.<decoder>.jsonl."""
    decoders = {}
    for name, beam in (("greedy", 1), ("beam4", 4)):
        t1 = time.time()
        hyps = generate(model, held, tok, beam, max_len)
        path = out.replace(".json", f".{name}.jsonl")
        with open(path, "w") as f:
            for (s, r), h in zip(held, hyps):
                f.write(json.dumps({"source": s, "reference": r, "recover": h}) + "\n")
        decoders[name] = {**score(hyps, held), "decode_s": round(time.time() - t1, 1), "outputs": os.path.relpath(path, ROOT)}
        print(name, decoders[name], flush=True)
    return decoders


def main(argv=None):
    a = parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = SPLITS[a.data]
    pairs, choose, held = (load_split_pairs(a.data, part) for part in ("train", "choose", "test"))
    if a.max_examples:
        held = held[:a.max_examples]
    tok = build_tokenizer("own", spec.folder, vocab_size=a.vocab_size)
    max_len = spec.seq_len
    model, run = train(a, tok, pairs, choose, max_len)
    out = a.out or os.path.join(ROOT, "bench", "quality", f"baseline_{a.data}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    snapshots = run.pop("snapshots")
    rec = {"data": a.data, "minutes": a.minutes, "threads": torch.get_num_threads(), **run, "args": vars(a),
           "decoders": decode_all(model, held, tok, max_len, out), "snapshots": []}
    final = {k: x.clone() for k, x in model.state_dict().items()}
    for snap in snapshots:  # the shorter runs this one passed through
        model.load_state_dict(snap.pop("state"))
        tag = out.replace(".json", f".{snap['minutes']:g}min.json")
        rec["snapshots"].append({**snap, "decoders": decode_all(model, held, tok, max_len, tag)})
    model.load_state_dict(final)
    rec["copy"] = score([s for s, _ in held], held)
    with open(out, "w") as f:
        json.dump(rec, f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
