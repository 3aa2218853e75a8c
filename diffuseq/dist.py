"""Process state of a (possibly) distributed run, kept out of the mathematics.

Launched by `torchrun`, each process reads RANK / WORLD_SIZE / LOCAL_RANK from the environment;
NCCL on GPUs, gloo on CPU. A plain `python train.py` is a world of one.

Nodes need not share a filesystem: what rank 0 reads or makes once (the arguments, the tokenizer, a
checkpoint to resume from) reaches the other ranks through the process group (broadcast_json,
broadcast_tensors), never through a file.
"""
import json
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


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


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


def host_group():
    """Every process, through gloo on the CPU: it never waits for a GPU stream (with NCCL this
    side group is made on first use, by every rank at the same call)."""
    global _HOST_GROUP
    if _HOST_GROUP is None:
        _HOST_GROUP = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return _HOST_GROUP


def host_flag_max(flag):
    """The maximum of a host-side bool over every process (host_group)."""
    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=host_group())
    return bool(t.item())


def broadcast_json(obj):
    """Rank 0's `obj`, plain JSON data (strings, numbers, lists, dicts), on every rank; what the
    other ranks pass is ignored. It travels as JSON text, so nothing but data can arrive."""
    if not dist.is_initialized():
        return obj
    box = [json.dumps(obj) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, group=host_group())
    return json.loads(box[0])


def broadcast_tensors(tensors, device):
    """Rank 0's {name: tensor} on every rank, on `device` there (rank 0 gets its own back; the
    others pass None): the names, shapes and dtypes as JSON, then each tensor's bytes through
    host_group (so any dtype goes, and NCCL needs no part in it)."""
    if not dist.is_initialized():
        return tensors
    main = dist.get_rank() == 0
    meta = broadcast_json({k: [list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in tensors.items()}
                          if main else None)
    out = {}
    for k, (shape, dtype) in meta.items():
        dtype = getattr(torch, dtype)
        if main:
            t = tensors[k].detach().to("cpu").contiguous()
            raw = t.reshape(-1).view(torch.uint8)
        else:
            raw = torch.empty(torch.Size(shape).numel() * dtype.itemsize, dtype=torch.uint8)
            t = raw.view(dtype).reshape(shape)
        if raw.numel():
            dist.broadcast(raw, src=0, group=host_group())
        out[k] = tensors[k] if main else t.to(device)
    return out


def cleanup():
    global _HOST_GROUP
    if dist.is_initialized():
        dist.destroy_process_group()
    _HOST_GROUP = None
