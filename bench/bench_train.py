"""Training throughput: one full optimisation step (forward, training_losses, backward, AdamW)
per preset and precision, against the same network with transformers' eager BertEncoder in
place of our encoder layers.

    python bench/bench_train.py                      # tiny and base, seq_len 128, batch 64
    python bench/bench_train.py --steps_memory       # peak memory after 10 and after 200 steps
    python bench/bench_train.py --quick              # a few seconds, for CI

Each configuration runs in its own process, so the CPU peak-RSS increase belongs to it alone.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn

import common  # noqa: F401  (puts the repository on sys.path)
from common import cpu_has_bf16, header_lines, median, peak_bf16, pick_device, sync, table, write_json
from diffuseq.diffusion import training_losses
from diffuseq.step import NetView
from diffuseq.model import PRESETS, Denoiser, DenoiserConfig
from diffuseq.schedule import DiscreteSchedule

VOCAB = 8000  # the default trained-tokenizer size
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class BertLayers(nn.Module):
    """transformers' BertEncoder standing in for our stack of encoder layers (no padding mask,
    like ours: every position is real)."""

    def __init__(self, cfg):
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertEncoder
        bc = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_hidden_layers=cfg.layers,
                        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn, hidden_act="gelu",
                        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                        layer_norm_eps=1e-12, max_position_embeddings=cfg.seq_len,
                        attn_implementation="eager")
        self.encoder = BertEncoder(bc)

    def forward(self, h):
        return self.encoder(h)[0]


def build(preset, seq_len, impl, device):
    cfg = DenoiserConfig(vocab_size=VOCAB, seq_len=seq_len, **PRESETS[preset])
    model = Denoiser(cfg)
    if impl == "bert-eager":
        model.layers = nn.ModuleList([BertLayers(cfg)])  # Denoiser.forward runs h through each
    return model.to(device).train()


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_mib(device, rss0):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return rss_mib() - rss0


def run_one(c):
    """Measure one (preset, precision) in this process; returns a dict (printed as JSON by the
    child). The implementations in c["impls"] take their timed steps in turn (ours, baseline,
    ours, ...), so a change of machine load hits them alike and the ratio is one run's. Peak
    memory is that of the first implementation (ours), taken before the next one is built."""
    device = torch.device(c["device"])
    torch.manual_seed(0)
    rss0 = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    B, L = c["bsz"], c["seq_len"]
    ids = torch.randint(5, VOCAB, (B, L), device=device)
    mask = torch.ones_like(ids)
    mask[:, : L // 2] = 0  # [CLS] x [SEP] on the first half, the target y on the second
    dtype = DTYPES[c["precision"]]
    y_tokens = int(mask.sum())

    def make_step(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
        sched = DiscreteSchedule.from_name("sqrt", model.cfg.diffusion_steps)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

        net = NetView(torch.compile(model), model) if c.get("compile") else model

        def step():
            t = torch.randint(0, sched.num_steps, (B,), device=device)
            noise = torch.randn(2, B, L, model.cfg.hidden_dim, device=device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                # as the trainer runs it between logged steps: without the monitoring pass
                loss = training_losses(net, sched, ids, mask, t, noise, monitor=False)["loss"].mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        return step

    out = {}
    if c.get("mem_steps"):
        step = make_step(build(c["preset"], L, "ours", device))
        marks, done = sorted(c["mem_steps"]), 0
        for m in marks:
            while done < m:
                step()
                done += 1
            sync(device)
            out[f"peak_mib_after_{m}"] = peak_mib(device, rss0)
        return out
    steps, models = {}, {}
    for i, impl in enumerate(c["impls"]):
        models[impl] = build(c["preset"], L, impl, device)
        steps[impl] = make_step(models[impl])
        for _ in range(c["warmup"]):
            steps[impl]()
        if i == 0:
            sync(device)
            out["peak_mib"] = peak_mib(device, rss0)
    times = {impl: [] for impl in c["impls"]}
    for _ in range(c["repeats"]):
        for impl in c["impls"]:
            sync(device)
            t0 = time.perf_counter()
            steps[impl]()
            sync(device)
            times[impl].append(time.perf_counter() - t0)
    if c.get("profile"):
        out["profile"] = profile_steps(steps[c["impls"][0]], device, c["profile"])
    for impl in c["impls"]:
        s = median(times[impl])
        out[impl] = dict(step_s=s, times=times[impl], y_tok_s=y_tokens / s, samples_s=B / s,
                         flops_per_token=models[impl].flops_per_token(L),
                         params_m=models[impl].num_params() / 1e6)
    return out


def profile_steps(step, device, path, n=3):
    """Profile n steps of ours and write the operators that take the most time to path. Returns
    the wall time of the n steps and the time the device spent in kernels: where the kernels take
    much less than the wall, the step is bound by launches and the host, not by arithmetic."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        wall = time.perf_counter() - t0
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    # kernels are the events that ran on the device (an operator's row repeats its kernels' time)
    kernel_us = sum(e.self_device_time_total for e in events
                    if e.device_type == torch.autograd.DeviceType.CUDA) if device.type == "cuda" else None
    with open(path, "w") as f:
        f.write(f"{n} steps, wall {wall:.4f} s" + (f", device kernels {kernel_us / 1e6:.4f} s" if kernel_us else "")
                + "\n\n" + events.table(sort_by=key, row_limit=30, max_name_column_width=60) + "\n")
    return dict(steps=n, wall_s=wall, kernel_s=None if kernel_us is None else kernel_us / 1e6)


def in_child(c):
    """Run one configuration in a fresh interpreter and return its result."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", json.dumps(c)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{c}: child failed\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def have_transformers():
    try:
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,base", help="comma-separated presets of diffuseq.model")
    p.add_argument("--precisions", default=None,
                   help="comma-separated of fp32,bf16,fp16 (default: all three on GPU; on CPU fp32, "
                        "and bf16 where the CPU has bf16 instructions)")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--bsz", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3, help="timed steps; the median is reported")
    p.add_argument("--base_repeats", type=int, default=None,
                   help="timed steps for the base preset (default: --repeats); base is slow on CPU")
    p.add_argument("--no_baseline", action="store_true", help="skip the transformers BertEncoder rows")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser, as train.py --compile")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="also profile 3 steps of ours (the first preset and precision) into FILE")
    p.add_argument("--steps_memory", action="store_true",
                   help="instead: peak memory of the first preset after --mem_steps steps (must match)")
    p.add_argument("--mem_steps", default="10,200")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a run of a few seconds (CI)")
    p.add_argument("--json", default=None, help="default bench/results/bench_train.json "
                                                "(bench_train_memory.json with --steps_memory)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        print(json.dumps(run_one(json.loads(a._child))))
        return 0

    device = pick_device(a.device)
    if a.quick:
        a.presets, a.seq_len, a.bsz, a.warmup, a.repeats = "tiny", 32, 4, 1, 2
        a.mem_steps = "2,6"
        a.precisions = a.precisions or "fp32"
    if a.precisions is None:
        a.precisions = "fp32,bf16,fp16" if device.type == "cuda" else "fp32,bf16" if cpu_has_bf16() else "fp32"
    precisions = a.precisions.split(",")
    presets = a.presets.split(",")
    base = dict(device=str(device), seq_len=a.seq_len, bsz=a.bsz, warmup=a.warmup, compile=a.compile)

    if a.steps_memory:
        marks = [int(s) for s in a.mem_steps.split(",")]
        rows, results = [], []
        for prec in precisions:
            r = in_child(dict(base, preset=presets[0], precision=prec, impl="ours", repeats=0, mem_steps=marks))
            vals = [r[f"peak_mib_after_{m}"] for m in marks]
            rows.append([presets[0], prec, *vals, f"{vals[-1] - vals[0]:+.1f}"])
            results.append(dict(preset=presets[0], precision=prec, **r))
        kind = "peak alloc MiB" if device.type == "cuda" else "peak RSS increase MiB"
        print(header_lines("bench_train --steps_memory", device,
                           f"seq_len {a.seq_len}, batch {a.bsz}, {kind}"))
        print(table(["preset", "precision", *[f"after {m} steps" for m in marks], "difference"], rows))
        path = write_json(a.json or os.path.join(common.ROOT, "bench", "results", "bench_train_memory.json"),
                          "bench_train_memory", device, dict(seq_len=a.seq_len, bsz=a.bsz, marks=marks,
                                                             results=results))
        print(f"json: {path}")
        return 0

    baseline = not a.no_baseline and have_transformers()
    impls = ["ours"] + (["bert-eager"] if baseline else [])
    peak = peak_bf16(device)
    rows, results = [], []
    for preset in presets:
        reps = a.base_repeats if preset == "base" and a.base_repeats else a.repeats
        for prec in precisions:
            prof = a.profile if a.profile and not results else None
            got = in_child(dict(base, preset=preset, precision=prec, impls=impls, repeats=reps, profile=prof))
            for impl in impls:
                r = got[impl]
                mfu = 3 * r["flops_per_token"] * (a.seq_len * a.bsz / r["step_s"]) / peak if peak else None
                ratio = f"{r['step_s'] / got['ours']['step_s']:.2f}x" if impl != "ours" else None
                peak_mem = got["peak_mib"] if impl == "ours" else None
                rows.append([preset, prec, impl, r["step_s"], r["y_tok_s"], r["samples_s"], peak_mem,
                             f"{100 * mfu:.1f}%" if mfu is not None else None, ratio])
                results.append(dict(preset=preset, precision=prec, impl=impl, mfu=mfu, peak_mib=peak_mem,
                                    profile=got.get("profile") if impl == "ours" else None, **r))
    print(header_lines("bench_train", device, f"seq_len {a.seq_len}, batch {a.bsz}, "
                       f"median of {a.repeats} steps"
                       + (f" (base: {a.base_repeats})" if a.base_repeats and "base" in presets else "")
                       + f" after {a.warmup} warm-up"))
    mem = "peak MiB" if device.type == "cuda" else "peak RSS +MiB"
    print(table(["preset", "precision", "impl", "s/step", "target tok/s", "samples/s", mem, "MFU",
                 "speed-up of ours"], rows))
    if not baseline:
        print("baseline skipped: pip install transformers" if not a.no_baseline else "baseline skipped (--no_baseline)")
    path = write_json(a.json, "bench_train", device, dict(seq_len=a.seq_len, bsz=a.bsz, warmup=a.warmup,
                                                         repeats=a.repeats, results=results))
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
