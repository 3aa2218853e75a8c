"""What a run tells: log lines (standard output, and log.txt of the run), one JSON record per
log line and per validation in curves.jsonl (the data of loss.png and of the benchmarks), and
Weights & Biases when asked for."""
import json
import logging
import os
import sys
import time

import torch

from . import dist

log = logging.getLogger("diffuseq")


def setup_logging(run_dir, is_main):
    """Log lines to standard output, and on the main process to run_dir/log.txt."""
    log.handlers.clear()
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(fmt)
    log.addHandler(h)
    if is_main:
        fh = logging.FileHandler(os.path.join(run_dir, "log.txt"))
        fh.setFormatter(fmt)
        log.addHandler(fh)


def close_logging():
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def fmt(d):
    return " ".join(f"{k} {v:.5g}" for k, v in d.items())


def read_curves(run_dir):
    """The records of run_dir/curves.jsonl, in order (an empty list if there is none; a line cut
    by a kill is left out)."""
    path = os.path.join(run_dir, "curves.jsonl")
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def add_terms(sums, terms, t, args):
    """Add a microbatch's loss terms [B] to the step's sums (on device), and with the monitoring
    terms the accuracy per quarter of the trained noise levels, for the curves."""
    for k, v in terms.items():
        sums[k] = sums.get(k, 0) + v.detach().sum()
    if "acc" in terms:
        q = ((t - args.t_min) * 4 // (args.diffusion_steps - args.t_min)).clamp(0, 3)
        sums["_acc_q"] = sums.get("_acc_q", 0) + torch.zeros(4, device=t.device).index_add_(
            0, q, terms["acc"].detach().float())
        sums["_n_q"] = sums.get("_n_q", 0) + torch.bincount(q, minlength=4).float()


class Window:
    """The steps since the last log line: each term's sum and number of steps (nll and acc come
    on some steps only), the target tokens, and the clock."""

    def __init__(self, step):
        self.start, self.t0, self.sums, self.tokens = step, time.time(), {}, 0

    def add(self, stats, tokens):
        for k, v in stats.items():
            s, c = self.sums.get(k, (0, 0))
            self.sums[k] = (s + v, c + 1)
        self.tokens = self.tokens + tokens

    def close(self, step, world_size):
        """(mean terms, steps/s, target tokens/s) of the window ending at `step`, over all
        processes; the accuracy per quarter of the noise levels becomes acc_q1..acc_q4 (a quarter
        no example fell in is left out)."""
        seconds = max(time.time() - self.t0, 1e-9)
        means = {k: dist.all_reduce_mean(s) / c for k, (s, c) in self.sums.items()}
        acc_q, n_q = means.pop("_acc_q", None), means.pop("_n_q", None)
        means = {k: float(v) for k, v in means.items()}
        if acc_q is not None:
            for i, (s, c) in enumerate(zip(acc_q.tolist(), n_q.tolist())):
                if c:
                    means[f"acc_q{i + 1}"] = s / c
        tokens = float(dist.all_reduce_mean(torch.as_tensor(self.tokens).float())) * world_size
        return means, (step - self.start) / seconds, tokens / seconds


class RunLog:
    """The main process's record of a run. Each training record carries the wall time, the
    seconds since this process started training, the step, steps/s and target tokens/s over the
    window since the last record, the learning rate and the mean loss terms; each validation
    record the step and the validation terms."""

    def __init__(self, run_dir, is_main, config=None, wandb="disabled"):
        self.path = os.path.join(run_dir, "curves.jsonl")
        self.is_main, self.t0 = is_main, time.time()
        self.wandb = None
        if wandb != "disabled" and is_main:
            try:
                import wandb as wb
            except ImportError:
                raise SystemExit("error: --wandb needs the wandb package: pip install wandb") from None
            self.wandb = wb.init(project="diffuseq", name=os.path.basename(run_dir), mode=wandb, config=config,
                                 dir=run_dir)

    def start(self):
        """The clock of `elapsed` starts now (when the loop begins)."""
        self.t0 = time.time()

    def _write(self, step, **fields):
        """One record: the step, the wall time, the seconds since start(), and `fields`."""
        if self.is_main:
            now = time.time()
            record = {"step": step, "time": round(now, 3), "elapsed": round(now - self.t0, 3), **fields}
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def train(self, step, means, steps_per_s, tokens_per_s, lr):
        rate = f"{steps_per_s:.3g}" if steps_per_s < 100 else f"{steps_per_s:.0f}"
        log.info("step %d | %s | %s steps/s | %.3g tokens/s | lr %.2e", step, fmt(means), rate, tokens_per_s, lr)
        self._write(step, steps_per_s=steps_per_s, tokens_per_s=tokens_per_s, lr=lr, train=means)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in means.items()} | {"steps_per_s": steps_per_s,
                                                                         "tokens_per_s": tokens_per_s}, step=step)

    def valid(self, step, val):
        log.info("step %d valid: %s", step, fmt(val))
        self._write(step, valid=val)
        if self.wandb is not None:
            self.wandb.log({f"valid/{k}": v for k, v in val.items()}, step=step)

    def finish(self):
        if self.wandb is not None:
            self.wandb.finish()
