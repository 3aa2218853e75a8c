"""Several nodes that share no filesystem: two "nodes" of two processes each on localhost (gloo),
each with its own copy of the code and of the data, launched by scripts/train.sh with the same
relative paths. Rank 0 alone has the run folder; the other node trains without ever seeing it,
and resumes from a checkpoint that only node 0 holds. What rank 0 reads reaches the others
through dist.broadcast_json and dist.broadcast_tensors."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from diffuseq import dist
from diffuseq.logs import read_curves
from toy import toy_data

ROOT = Path(__file__).resolve().parents[1]
# a constant learning rate: a run stopped at step 2 and resumed to 4 is then a run of 4 steps (and
# a large one, so that a rank that resumed wrongly shows)
TOY = ("--width 32 --layers 1 --heads 2 --ffn 64 --hidden_dim 16 --seq_len 32 --diffusion_steps 20 --bsz 16 "
       "--lr 0.01 --warmup_steps 0 --lr_schedule constant --eval_interval 0 --log_interval 1 --progress false").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout(folder):
    """What a node needs of the repository (its own copy, as on a machine of its own) and its own
    toy data in data/."""
    folder.mkdir()
    for f in ("train.py", "scripts"):
        (shutil.copytree if (ROOT / f).is_dir() else shutil.copy)(ROOT / f, folder / f)
    shutil.copytree(ROOT / "diffuseq", folder / "diffuseq", ignore=shutil.ignore_patterns("__pycache__"))
    toy_data(folder / "data")
    return folder


def launch_nodes(nodes, argv, timeout=300):
    """`bash scripts/train.sh argv` in each node's folder at once, as NODE_RANK 0, 1, ... of
    NNODES with 2 processes each (output in the node's launch.txt); every node must exit 0."""
    port = str(free_port())
    procs = []
    for rank, node in enumerate(nodes):
        env = {**os.environ, "NNODES": str(len(nodes)), "NODE_RANK": str(rank), "NPROC": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
        env.pop("PYTHONPATH", None)  # each node runs its own copy of the code
        with open(node / "launch.txt", "w") as out:
            procs.append(subprocess.Popen(["bash", "scripts/train.sh", *argv], cwd=node, env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
    for p in procs:
        p.wait(timeout=timeout)
    assert all(p.returncode == 0 for p in procs), "\n".join(
        f"node {rank} (exit {p.returncode}):\n{(node / 'launch.txt').read_text()[-3000:]}"
        for rank, (p, node) in enumerate(zip(procs, nodes)))


def test_two_nodes_without_a_shared_filesystem(tmp_path):
    nodes = [checkout(tmp_path / "node0"), checkout(tmp_path / "node1")]
    argv = ["--data_dir", "data", "--checkpoint_path", "runs/x", *TOY]
    launch_nodes(nodes, [*argv, "--learning_steps", "2", "--save_interval", "2"])
    run = nodes[0] / "runs" / "x"
    assert "4 process(es)" in (run / "log.txt").read_text()
    assert (run / "ckpt_0000002").is_dir()
    assert not (nodes[1] / "runs").exists()  # node 1 never made nor read a run folder

    # only node 0 holds the checkpoint: rank 0 sends the weights, the EMA and the optimizer state
    # to the others. A rank that resumed with another optimizer state would take another step 3,
    # and the loss of step 4 (the mean over every rank, each at its own weights) would differ from
    # that of one process trained 4 steps straight.
    launch_nodes(nodes, ["--resume_checkpoint", "runs/x", "--learning_steps", "4", "--save_interval", "4"])
    assert "resumed from runs/x/ckpt_0000002 at step 2" in (run / "log.txt").read_text()
    assert not (nodes[1] / "runs").exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "train.py", "--data_dir", "data", "--checkpoint_path", "runs/single", *TOY,
                        "--learning_steps", "4", "--save_interval", "4", "--microbatch", "4"], cwd=nodes[0], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    resumed, single = (read_curves(str(f)) for f in (run, nodes[0] / "runs" / "single"))
    assert [r["step"] for r in resumed if "train" in r] == [1, 2, 3, 4]
    for a, b in zip((r["train"] for r in resumed if "train" in r), (r["train"] for r in single if "train" in r)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def _send(rank, store, out):
    """One of two gloo processes: what the broadcasts give it, saved to out<rank>.pt."""
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    sent = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).bfloat16(), "f64": torch.randn(2, dtype=torch.float64),
            "bool": torch.tensor([True, False, True]), "u8": torch.arange(7, dtype=torch.uint8),
            "scalar": torch.tensor(7), "empty": torch.zeros(0, 3)}
    got = dist.broadcast_tensors(sent if rank == 0 else None, "cpu")
    torch.save({"tensors": got, "json": dist.broadcast_json({"a": [1, "x", None]} if rank == 0 else "ignored"),
                "sent": sent}, f"{out}{rank}.pt")
    dist.cleanup()


def test_broadcasts_carry_rank_0s_data_bit_for_bit(tmp_path):
    """broadcast_tensors gives every rank rank 0's tensors (any dtype, scalars and empty ones
    too), broadcast_json rank 0's data."""
    mp.spawn(_send, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    zero, one = (torch.load(tmp_path / f"out{r}.pt") for r in (0, 1))
    assert one["json"] == zero["json"] == {"a": [1, "x", None]}
    assert set(one["tensors"]) == set(zero["sent"])
    for k, t in zero["sent"].items():
        u = one["tensors"][k]
        assert u.dtype == t.dtype and u.shape == t.shape and torch.equal(u, t), k
