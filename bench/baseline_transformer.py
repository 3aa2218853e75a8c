"""The line a diffusion model has to beat besides copying: a small autoregressive encoder-decoder
Transformer trained from scratch on the same pairs, with the same tokenizer, for the same minutes,
decoded greedily and with a beam of 4.

    taskset -c 0 python bench/baseline_transformer.py --data bible --minutes 15 --threads 1
    python bench/baseline_transformer.py --data qqp --minutes 15 --out bench/quality/baseline_qqp.json

The checkpoint kept is the one with the lowest validation loss (on the split the diffusion runs
choose their decoding on); the scores are on the held-out split of bench/splits.py. Outputs are
written as DiffuSeq's jsonl ({"source", "reference", "recover"}) next to the JSON record, so
scripts/eval_seq2seq.py scores them too.
"""
import argparse
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


class Seq2Seq(nn.Module):
    """Pre-norm encoder-decoder, one embedding table shared by source, target and output."""

    def __init__(self, vocab, width=128, layers=2, heads=4, ffn=512, dropout=0.1, max_len=256):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        nn.init.normal_(self.emb.weight, std=width ** -0.5)  # tied output: logits start near 0
        self.pos = nn.Embedding(max_len, width)
        enc = nn.TransformerEncoderLayer(width, heads, ffn, dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(width, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, layers, norm=nn.LayerNorm(width))
        self.scale = math.sqrt(width)

    def embed(self, ids):
        return self.emb(ids) * self.scale + self.pos(torch.arange(ids.shape[1], device=ids.device))

    def encode(self, src, pad):
        return self.encoder(self.embed(src), src_key_padding_mask=src == pad)

    def hidden(self, memory, src_pad, prefix):
        n = prefix.shape[1]
        causal = torch.triu(torch.full((n, n), float("-inf"), device=prefix.device), 1)
        return self.decoder(self.embed(prefix), memory, tgt_mask=causal, memory_key_padding_mask=src_pad)

    def decode(self, memory, src_pad, prefix):
        """Logits of the next token after each prefix position: [B, n, V]."""
        return self.hidden(memory, src_pad, prefix) @ self.emb.weight.t()


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
def beam_search(model, src, tok, beam=1, max_len=160, alpha=0.6):
    """Beam search (beam=1: greedy) over a batch of sources; hypotheses end at [SEP] and are ranked
    by log-probability / length^alpha. Returns one id list per source."""
    B, pad = src.shape[0], tok.pad_id
    memory = model.encode(src, pad).repeat_interleave(beam, 0)
    src_pad = (src == pad).repeat_interleave(beam, 0)
    seqs = torch.full((B * beam, 1), tok.cls_id, dtype=torch.long)
    scores = torch.zeros(B, beam)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    done = torch.zeros(B * beam, dtype=torch.bool)
    limit = min(max_len, 2 * src.shape[1] + 10)
    for _ in range(limit):
        logp = model.decode(memory, src_pad, seqs)[:, -1].float().log_softmax(-1)
        logp[done] = float("-inf")
        logp[done, pad] = 0.0  # a finished hypothesis only grows padding, at no cost
        V = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(B, beam * V)
        scores, idx = cand.topk(beam, -1)
        rows = (torch.arange(B)[:, None] * beam + idx // V).view(-1)
        nxt = (idx % V).view(-1, 1)
        seqs = torch.cat([seqs[rows], nxt], 1)
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


def generate(model, pairs, tok, beam, max_len, bsz=50):
    model.eval()
    outs = []
    for i in range(0, len(pairs), bsz):
        src, _ = pad_batch(pairs[i:i + bsz], tok, max_len)
        outs += tok.decode_batch(beam_search(model, src, tok, beam, max_len))
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


def main(argv=None):
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
    p.add_argument("--out", default=None, help="JSON record (default bench/quality/baseline_<data>.json)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    spec = SPLITS[a.data]
    train, choose, held = (load_split_pairs(a.data, part) for part in ("train", "choose", "test"))
    if a.max_examples:
        held = held[:a.max_examples]
    tok = build_tokenizer("own", spec.folder, vocab_size=a.vocab_size)
    max_len = spec.seq_len
    model = Seq2Seq(tok.vocab_size, a.width, a.layers, dropout=a.dropout, max_len=2 * max_len + 16)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = 200
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    g = torch.Generator().manual_seed(a.seed)
    t0, step, best, curve = time.time(), 0, (float("inf"), None, 0), []
    while time.time() - t0 < a.minutes * 60:
        for src, trg in batches(train, tok, a.bsz, max_len, g):
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
            if time.time() - t0 >= a.minutes * 60:
                break
    train_s = time.time() - t0
    if best[1] is not None:
        model.load_state_dict(best[1])
    out = a.out or os.path.join(ROOT, "bench", "quality", f"baseline_{a.data}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    rec = {"data": a.data, "minutes": a.minutes, "threads": torch.get_num_threads(), "steps": step,
           "best_step": best[2], "best_valid_loss": best[0], "train_s": round(train_s, 1),
           "params": sum(x.numel() for x in model.parameters()), "args": vars(a), "curve": curve, "decoders": {}}
    for name, beam in (("greedy", 1), ("beam4", 4)):
        t1 = time.time()
        hyps = generate(model, held, tok, beam, max_len)
        path = out.replace(".json", f".{name}.jsonl")
        with open(path, "w") as f:
            for (s, r), h in zip(held, hyps):
                f.write(json.dumps({"source": s, "reference": r, "recover": h}) + "\n")
        rec["decoders"][name] = {**score(hyps, held), "decode_s": round(time.time() - t1, 1), "outputs": os.path.relpath(path, ROOT)}
        print(name, rec["decoders"][name], flush=True)
    rec["copy"] = score([s for s, _ in held], held)
    with open(out, "w") as f:
        json.dump(rec, f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
