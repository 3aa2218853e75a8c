"""Decoding throughput (sentences/s) of a tiny model with random weights: the ancestral sampler
at K = 2000 and 100 against DPM-Solver++ at K = 10 and 20, at batch sizes 64 and 512.

Every sampling step is one model call on the same shapes, so when K exceeds --timed_steps only
the first --timed_steps steps are run and timed one by one and the median step time is scaled to
K steps (the table says so). DPM-Solver++ makes K + 1 model calls for K steps.

    python bench/bench_decode.py
    python bench/bench_decode.py --quick
"""
import argparse
import sys
import time

import torch

import common  # noqa: F401  (puts the repository on sys.path)
from common import header_lines, median, pick_device, sync, table, write_json
from diffuseq.config import TrainConfig
from diffuseq.pipeline import DiffuSeq
from diffuseq.model import PRESETS, Denoiser, DenoiserConfig

VOCAB = 8000


def random_model(preset, seq_len, device, dtype=None):
    """The decoding pipeline around a randomly initialised denoiser: no checkpoint, no tokenizer."""
    cfg = DenoiserConfig(vocab_size=VOCAB, seq_len=seq_len, **PRESETS[preset])
    args = TrainConfig(diffusion_steps=cfg.diffusion_steps, noise_schedule="sqrt", denoise=False, length_head=False)
    return DiffuSeq(Denoiser(cfg), None, args, device, dtype)


def step_timer(limit, times, device):
    """A `progress` hook for the samplers: lets `limit` steps run and records each one's time."""
    def hook(it):
        last = None
        for i, x in enumerate(it):
            sync(device)
            now = time.perf_counter()
            if last is not None:
                times.append(now - last)
            if i == limit:
                return
            last = now
            yield x
    return hook


def measure(model, sampler, k, bsz, timed_steps, repeats, device):
    """Seconds for one batch of K steps: measured whole when K is small, else extrapolated."""
    L = model.seq_len
    ids = torch.randint(5, VOCAB, (bsz, L))
    mask = torch.ones_like(ids)
    mask[:, : L // 2] = 0
    calls = k + 1 if sampler == "dpm" else k
    if calls <= timed_steps:
        model.sample_ids(ids, mask, sampler, k)  # warm-up
        times = []
        for r in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            model.sample_ids(ids, mask, sampler, k, seed=r)
            sync(device)
            times.append(time.perf_counter() - t0)
        return median(times), "measured"
    times = []
    model.sample_ids(ids, mask, sampler, k, progress=step_timer(timed_steps + 1, times, device))
    per_step = median(times[1:])  # the first step is the warm-up
    return per_step * calls, f"timed {timed_steps} of {calls} steps"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--bszs", default="64,512")
    p.add_argument("--ancestral", default="2000,100", help="ancestral sampler step counts")
    p.add_argument("--dpm", default="10,20", help="DPM-Solver++ step counts")
    p.add_argument("--timed_steps", type=int, default=5,
                   help="at most this many model calls are run per measurement; more are extrapolated")
    p.add_argument("--repeats", type=int, default=3, help="repeats of a whole measured run (median)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser (with CUDA graphs on a GPU), as run_decode --compile")
    p.add_argument("--quick", action="store_true", help="a run of a few seconds (CI)")
    p.add_argument("--json", default=None, help="default bench/results/bench_decode.json")
    a = p.parse_args(argv)
    if a.quick:
        a.seq_len, a.bszs, a.ancestral, a.dpm, a.timed_steps, a.repeats = 32, "4", "2000", "2", 3, 1
    device = pick_device(a.device)
    torch.manual_seed(0)
    model = random_model(a.preset, a.seq_len, device, torch.bfloat16 if a.precision == "bf16" else None)
    if a.compile:
        model.net = torch.compile(model.model, mode="reduce-overhead" if device.type == "cuda" else None)
    plan = [("ancestral", int(k)) for k in a.ancestral.split(",")] + [("dpm", int(k)) for k in a.dpm.split(",")]
    rows, results = [], []
    for bsz in (int(b) for b in a.bszs.split(",")):
        secs = {}
        for sampler, k in plan:
            s, how = measure(model, sampler, k, bsz, a.timed_steps, a.repeats, device)
            secs[(sampler, k)] = s
            name = f"{'ancestral' if sampler == 'ancestral' else 'DPM-Solver++'} K={k}"
            results.append(dict(sampler=sampler, steps=k, bsz=bsz, batch_s=s, sent_s=bsz / s, how=how))
            rows.append([bsz, name, s, bsz / s, how, None])
        ref, fast = ("ancestral", 2000), ("dpm", 10)
        if ref in secs and fast in secs:
            rows[-len(plan) + plan.index(fast)][-1] = f"{secs[ref] / secs[fast]:.0f}x vs ancestral K=2000"
            results[-len(plan) + plan.index(fast)]["speedup_vs_ancestral_2000"] = secs[ref] / secs[fast]
    print(header_lines("bench_decode", device, f"{a.preset} (random weights), seq_len {a.seq_len} "
                       f"(half source, half target), {a.precision}" + (", compiled" if a.compile else "")))
    print(table(["batch", "sampler", "s/batch", "sent/s", "how", "speed-up"], rows))
    path = write_json(a.json, "bench_decode", device, dict(preset=a.preset, seq_len=a.seq_len, compile=a.compile,
                                                          precision=a.precision, results=results))
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
