"""Process state of a (possibly) distributed run, kept out of the mathematics.

Launched by `torchrun`, each process reads RANK / WORLD_SIZE / LOCAL_RANK from the environment;
NCCL on GPUs, gloo on CPU. A plain `python train.py` is a world of one.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0


def pick_device(name="auto", local_rank=0):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def setup(device="auto"):
    """Initialise the process group when launched by torchrun; return this process's info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if world > 1 and dev.type == "cpu":
        # processes share the cores: one thread each unless the user said otherwise
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    flush_denormals()
    return ProcessInfo(rank, world, local, dev)


def flush_denormals():
    """Treat fp32 numbers below 1.2e-38 as zero on the CPU. The rounding term's softmax puts
    almost all of its probability mass on the right token, and most of the other entries of
    its [N, V] gradient fall below that; an x86 core computes with such denormal numbers many
    times slower (measured: 2.3x the whole training step of a small model). No value above
    1.2e-38 changes. Returns whether the platform supports it."""
    return torch.set_flush_denormal(True)


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_gather_cat(t):
    """Concatenate a tensor [n, ...] of equal n from every rank, in rank order."""
    if not dist.is_initialized():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_reduce_mean(t):
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


_HOST_GROUP = None


def host_flag_max(flag):
    """The maximum of a host-side bool over every process, through gloo on the CPU: it never
    waits for a GPU stream (with NCCL a side group of gloo is made once, by every rank)."""
    global _HOST_GROUP
    if not dist.is_initialized():
        return bool(flag)
    if _HOST_GROUP is None:
        _HOST_GROUP = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_HOST_GROUP)
    return bool(t.item())


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()
