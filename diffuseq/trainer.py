"""The training loop: set up, loop, log, checkpoint.

Every random draw of a step (batch order, timesteps, noise, dropout) is a function of
(seed, step), and the noise is drawn for the whole global batch and sliced per process (noise.py),
so a run resumed from a checkpoint continues exactly (run.py), and N processes train as one with
the same global batch. The optimizer, its schedule and the EMA are in optim.py; what a run logs
in logs.py.
"""
import json
import logging
import os
import signal
import queue
import sys
import threading
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint as ckpt
from . import dist
from . import run as run_folder
from .config import model_config
from .data.dataset import BatchLoader, DataError, default_pad_to, load_split, make_eval_batches
from .logs import RunLog, Window
from .model import Denoiser, load_bert_encoder
from .layout import Layout
from .objective import Objective
from .optim import EMA, allow_tf32, autocast_dtype, build_optimizer, ema_live_names, lr_at
from .resample import create_sampler
from .schedule import DiscreteSchedule
from .step import TrainStep
from .tokenizer import TokenizerError

log = logging.getLogger("diffuseq")


class Prefetcher:
    """Builds the next batches on a background thread and moves them to the device."""

    def __init__(self, loader, start, device, depth=2):
        self.q = queue.Queue(maxsize=depth)
        self.device = device
        self.stop = threading.Event()

        def work():
            step = start
            while not self.stop.is_set():
                try:
                    item = (step, loader.batch_at(step))
                except Exception as e:  # surfaced in the main thread
                    item = (step, e)
                while not self.stop.is_set():
                    try:
                        self.q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                step += 1

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def get(self):
        step, batch = self.q.get()
        if isinstance(batch, Exception):
            raise batch
        return step, {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def close(self):
        """Stop and join the worker: a thread still inside a native call when the interpreter
        exits can abort the process."""
        self.stop.set()
        self.thread.join(timeout=30)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (a scheduler's preemption, torchrun's shutdown) asks the loop to
    stop at the end of the current step, so the checkpoint it then writes is a whole step's state.
    A second Ctrl-C interrupts at once."""

    def __enter__(self):
        self.requested, self.old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def load_logged(a, split, tokenizer, proc):
    """<data_dir>/<split>.jsonl tokenized (each node's first process first, which caches it for the
    others on its node: nodes need not share a filesystem), with one log line of what was read;
    no usable pair is a DataError."""
    first = proc.local_rank == 0
    if not first:
        dist.barrier()
    ds, stats = load_split(a.data_dir, split, tokenizer, a.seq_len, skip_bad_lines=a.skip_bad_lines, layout=a.layout,
                           both_directions=a.both_directions and split == "train")
    if first:
        dist.barrier()
        log.info("%s: %d pairs, %d truncated to seq_len %d%s%s", split, stats.n_pairs, stats.n_truncated,
                 a.seq_len, f", {stats.n_skipped} bad lines skipped" if stats.n_skipped else "",
                 " (cached)" if stats.from_cache else "")
    if stats.n_pairs == 0:
        raise DataError(f"{os.path.join(a.data_dir, split + '.jsonl')}: no usable pairs")
    return ds


class Trainer:
    def __init__(self, args):
        """Set up a run. If setting up fails (bad data, a bad argument), a run folder that this call
        created is removed again: a failed command leaves nothing behind."""
        with run_folder.new_run(args):
            self._setup(args)

    def _setup(self, args):
        self.last_valid = (None, None)  # (step, the family's selection column) of the last validation
        self.proc = proc = dist.setup(args.device)
        resume_dir = None
        if args.resume_checkpoint:
            args, resume_dir = run_folder.resume_args(args)
        self.args = args
        torch.manual_seed(args.seed)
        self.tokenizer = run_folder.prepare(args, proc, resume_dir)
        self.layout = Layout(self.tokenizer, args.seq_len, args.layout)
        self.train_set = load_logged(args, "train", self.tokenizer, proc)
        self.valid_set = load_logged(args, "valid", self.tokenizer, proc) if os.path.isfile(
            os.path.join(args.data_dir, "valid.jsonl")) else None

        self.cfg = model_config(args, self.tokenizer.vocab_size)
        self.model = Denoiser(self.cfg).to(proc.device)
        if args.init_from and not resume_dir:
            loaded = load_bert_encoder(self.model, args.init_from)
            log.info("initialised %d tensors from %s", len(loaded), args.init_from)
        self.sched = DiscreteSchedule.from_name(args.noise_schedule, args.diffusion_steps)
        if not 0 <= args.t_min < args.diffusion_steps:
            raise ValueError(f"--t_min {args.t_min} must lie in [0, --diffusion_steps {args.diffusion_steps})")
        self.sampler = create_sampler(args.schedule_sampler, args.diffusion_steps - args.t_min)
        self.amp_dtype = autocast_dtype(args.precision, proc.device)
        allow_tf32(args.precision)
        self.scaler = torch.amp.GradScaler(proc.device.type, enabled=self.amp_dtype == torch.float16)
        self.objective = Objective(args, self.sched, self.layout, self.amp_dtype, proc.device)
        self.opt = build_optimizer(self.model, args, proc.device)
        self.ema = EMA(self.model.parameters(), args.ema_rate, ema_live_names(args))
        self.step = 0
        if resume_dir:
            self.step = run_folder.restore(resume_dir, self.model, self.ema, self.opt, self.scaler, self.sampler,
                                           proc.device)
        self.model.pack = {"auto": None, "true": True, "false": False}[args.pack]
        self.net = self.model
        if args.compile:
            self.net = torch.compile(self.net)
        if proc.world_size > 1:
            self.net = DDP(self.net, device_ids=[proc.device] if proc.device.type == "cuda" else None)
        self.margin = args.length_margin
        self.loader = BatchLoader(self.train_set, args.bsz, proc.rank, proc.world_size, args.seed,
                                  args.seq_len, self.tokenizer.pad_id, bucket=args.bucket,
                                  pin_memory=proc.device.type == "cuda", margin=self.margin)
        self.stepper = TrainStep(args, proc, self.model, self.net, self.objective, self.opt, self.scaler, self.ema,
                                 self.sampler)
        self.runlog = RunLog(args.checkpoint_path, proc.is_main, args.to_dict(), args.wandb)

    def save(self):
        self.stepper.flush_sampler()
        if self.proc.is_main:
            valid = self.last_valid[1] if self.last_valid[0] == self.step else None
            run_folder.save(self.args.checkpoint_path, self.step, self.model, self.ema, self.opt, self.scaler,
                            self.sampler, self.args.keep_checkpoints, valid)
        dist.barrier()

    def train_step(self, batch):
        """One optimisation step (step.TrainStep) on this process's part of the global batch."""
        means = self.stepper(batch, self.step)
        self.step += 1
        return means

    def validate(self):
        """Mean loss terms on the first eval_batches batches of valid.jsonl (objective.validate)."""
        if self.valid_set is None:
            return None
        a = self.args
        batches = make_eval_batches(self.valid_set, a.microbatch, a.seq_len, self.tokenizer.pad_id,
                                    pad_to=default_pad_to(self.margin), margin=self.margin)
        return self.objective.validate(self.model, batches, a.eval_batches, self.margin)

    # ------------------------------------------------------------------ the loop
    def train(self):
        a, proc = self.args, self.proc
        log.info("model: %s, %.2fM parameters (%.2fM without embeddings), device %s, %d process(es), "
                 "precision %s", json.dumps(self.cfg.to_dict()), self.model.num_params() / 1e6,
                 self.model.num_params(True) / 1e6, proc.device, proc.world_size,
                 {None: "tf32" if a.precision == "tf32" else "fp32", torch.bfloat16: "bf16",
                  torch.float16: "fp16"}[self.amp_dtype])
        log.info(self.objective.family.columns)
        self.model.train()
        bar = None
        if a.progress and proc.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=a.learning_steps, initial=self.step, desc="train", dynamic_ncols=True, disable=None)
        fetch = Prefetcher(self.loader, self.step, proc.device)
        window = Window(self.step)
        deadline = time.time() + 60 * a.max_minutes if a.max_minutes else None
        self.runlog.start()
        try:
            with StopRequest() as stop:
                while self.step < a.learning_steps:
                    _, batch = fetch.get()
                    tokens = batch["length"].sum() - (1 - batch["input_mask"]).sum()  # target tokens
                    window.add(self.train_step(batch), tokens)
                    if bar is not None:
                        bar.update(1)
                    if self.step % a.log_interval == 0 or self.step == a.learning_steps:
                        self.stepper.flush_sampler()
                        means, steps_per_s, tokens_per_s = window.close(self.step, proc.world_size)
                        if bar is not None:
                            bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['acc']:.3f}", refresh=False)
                        self.runlog.train(self.step, means, steps_per_s, tokens_per_s, lr_at(self.step - 1, a))
                        window = Window(self.step)
                    stopping = self._agree(stop.requested) and self.step < a.learning_steps
                    if stopping and proc.is_main:
                        log.warning("interrupted at step %d: saving a checkpoint to resume from", self.step)
                    out_of_time = deadline is not None and self._agree(time.time() > deadline)
                    if out_of_time:
                        log.info("--max_minutes %g reached at step %d", a.max_minutes, self.step)
                    # the last checkpoint of a time-limited run is validated too, so it can be the best
                    if a.eval_interval and (self.step % a.eval_interval == 0 or out_of_time) and proc.is_main:
                        val = self.validate()
                        if val:
                            self.last_valid = (self.step, val[self.objective.family.selection])
                            self.runlog.valid(self.step, val)
                    if (stopping or out_of_time or self.step % a.save_interval == 0
                            or self.step == a.learning_steps):
                        self.save()
                    if stopping:
                        raise KeyboardInterrupt
                    if out_of_time:
                        break
        finally:
            fetch.close()
            if bar is not None:
                bar.close()
        self.runlog.finish()
        return self.step

    STOP_CHECK = 10  # steps between the processes' agreement on a stop request

    def _agree(self, flag):
        """A host-side flag (a stop request, a deadline) every process acts on together: true
        once any process sees it. Several processes agree every STOP_CHECK steps (one small
        all-reduce on the host), so they all stop after, and save, the same step."""
        if self.proc.world_size == 1:
            return flag
        return dist.host_flag_max(flag) if self.step % self.STOP_CHECK == 0 else False


def main(args):
    """Train with parsed arguments; user errors become one-line messages, not tracebacks."""
    trainer = None
    try:
        trainer = Trainer(args)
        trainer.train()
        if trainer.args.tune_decoding and trainer.proc.is_main:
            from .tuning import main as tune_main
            dist.cleanup()  # decoding runs in this process alone
            if tune_main(["--model_dir", trainer.args.checkpoint_path, "--device", str(trainer.proc.device)]):
                return 2
    except (DataError, TokenizerError, ckpt.CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0")) == 0:
            if trainer is not None:  # a resumed run's folder comes from its checkpoint, not from args
                run = trainer.args.checkpoint_path
                resumable = bool(ckpt.list_checkpoints(run))
            else:  # interrupted while setting up
                run = args.resume_checkpoint or args.checkpoint_path
                resumable = bool(args.resume_checkpoint)
            if resumable:
                print(f"interrupted; resume with --resume_checkpoint {run}", file=sys.stderr)
            else:
                print(f"interrupted before the first checkpoint of {run}: nothing to resume", file=sys.stderr)
        return 130
    finally:
        dist.cleanup()
    return 0
