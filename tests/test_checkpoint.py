"""Checkpoints of diffuseq/checkpoint.py: nested training state round-trips through JSON +
safetensors, files that would run code when unpickled are refused, and older .pt folders are
read and converted."""
import json
import os
import random

import numpy as np
import pytest
import torch

from diffuseq import checkpoint as ckpt
from diffuseq import checkpoint_cli
from toy import fake_checkpoint


class RunsCode:
    """Unpickling this creates a folder: proof that a loader executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def nested_state():
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    return {"optimizer": opt.state_dict(), "step": 7, "scale": 65536.0, "nothing": None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "sampler": {"loss_history": np.random.rand(4, 3), "loss_counts": np.array([3, 3, 1, 0])}}


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_training_state_round_trips_without_pickle(tmp_path):
    state = nested_state()
    folder = ckpt.save_checkpoint(str(tmp_path), 3, {"training_state.state": state,
                                                     "model.safetensors": {"w": torch.arange(6.0).view(2, 3)}})
    assert sorted(os.listdir(folder)) == ["model.safetensors", "training_state.json", "training_state.safetensors"]
    json.loads(open(os.path.join(folder, "training_state.json")).read())  # plain JSON
    back = ckpt.load(folder, "training_state")
    assert_same(state, back)
    # the restored states drive the same random streams
    np.random.set_state(back["rng"]["numpy"])
    random.setstate(back["rng"]["python"])
    x = (np.random.rand(), random.random())
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    assert x == (np.random.rand(), random.random())
    # the optimizer state loads into a fresh optimizer (integer parameter keys survive)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3, 2))], lr=1e-3)
    opt.load_state_dict(back["optimizer"])
    assert opt.state_dict()["state"][0]["exp_avg"].shape == (3, 2)
    assert torch.equal(ckpt.load(folder, "model")["w"], torch.arange(6.0).view(2, 3))


def test_unknown_objects_are_not_stored(tmp_path):
    with pytest.raises(TypeError, match="cannot store a RunsCode"):
        ckpt.flatten_state({"a": [1, RunsCode("x")]})


def _legacy_folder(folder, payload):
    from diffuseq.tokenizer import train_tokenizer
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"preset": "tiny", "seq_len": 8, "hidden_dim": 4,
                                                  "dropout": 0.0, "diffusion_steps": 10,
                                                  "learned_mean_embed": False, "noise_schedule": "sqrt"}))
    train_tokenizer(["in the beginning"], vocab_size=50).save(str(folder / "tokenizer.json"))
    torch.save(payload, folder / "model.pt")
    return folder


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    folder = _legacy_folder(tmp_path / "ckpt_0000001", {"w": torch.zeros(2), "x": RunsCode(str(marker))})
    # the file really is an exploit: the unrestricted unpickler runs it
    torch.load(folder / "model.pt", weights_only=False)
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(ckpt.CheckpointError, match="refused to load.*run Python code") as e:
        ckpt.load(str(folder), "model")
    assert str(folder / "model.pt") in str(e.value) and not marker.exists()

    from diffuseq.decoding import load_model
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.convert(str(folder))
    assert not marker.exists() and (folder / "model.pt").is_file()


def test_older_pt_checkpoints_load_and_convert(tmp_path):
    weights = {"a.weight": torch.randn(4, 3), "b.bias": torch.randn(3)}
    state = nested_state()
    folder = _legacy_folder(tmp_path / "run" / "ckpt_0000005", weights)
    torch.save(weights, folder / "ema.pt")
    torch.save(state, folder / "training_state.pt")
    assert ckpt.resolve(str(tmp_path / "run")) == str(folder)
    assert_same(ckpt.load(str(folder), "model"), weights)
    assert_same(ckpt.load(str(folder), "training_state"), state)

    assert checkpoint_cli.main(["convert", str(tmp_path / "run")]) == 0
    assert not list(folder.glob("*.pt"))
    assert (folder / "model.safetensors").is_file() and (folder / "training_state.json").is_file()
    assert_same(ckpt.load(str(folder), "ema"), weights)
    assert_same(ckpt.load(str(folder), "training_state"), state)


def test_damaged_files_give_a_clear_error(tmp_path):
    folder = tmp_path / "ckpt_0000001"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ckpt.CheckpointError, match="damaged"):
        ckpt.load(str(folder), "model")
    with pytest.raises(ckpt.CheckpointError, match="missing ema.safetensors"):
        ckpt.load(str(folder), "ema")


def test_keep_prunes_to_the_newest_and_the_best(tmp_path):
    """keep=2 over five saves: the two newest remain, and the best by validation loss besides;
    resolving the run then gives the latest for resuming and the best for decoding."""
    import torch
    losses = {1: 0.9, 2: 0.5, 3: 0.7, 4: None, 5: 0.6}
    (tmp_path / "args.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    for step, loss in losses.items():
        ckpt.save_checkpoint(str(tmp_path), step, {
            "model.safetensors": {"w": torch.full((2,), float(step))}, "ema.safetensors": {"w": torch.zeros(2)},
            "training_state.state": {"step": step}, "args.json": str(tmp_path / "args.json"),
            "tokenizer.json": str(tmp_path / "tokenizer.json")}, keep=2, valid_loss=loss)
    left = [ckpt.step_of(p) for p in ckpt.list_checkpoints(str(tmp_path))]
    assert left == [2, 4, 5]
    assert ckpt.best_checkpoint(str(tmp_path))["checkpoint"] == ckpt.ckpt_name(2)
    assert ckpt.step_of(ckpt.resolve(str(tmp_path))) == 5
    assert ckpt.step_of(ckpt.resolve(str(tmp_path), "best")) == 2
    assert float(ckpt.load(ckpt.resolve(str(tmp_path), "best"), "model")["w"][0]) == 2.0


def test_resolve_ignores_a_checkpoint_being_written(tmp_path):
    """A temporary folder left by a kill mid-save is never taken for a checkpoint, even when it
    holds every file and is newer than the last complete one."""
    done = fake_checkpoint(tmp_path / ckpt.ckpt_name(6))
    fake_checkpoint(tmp_path / f".tmp_{ckpt.ckpt_name(12)}_0123abcd")
    assert ckpt.resolve(str(tmp_path)) == str(done)
    assert ckpt.list_checkpoints(str(tmp_path)) == [str(done)]


@pytest.mark.parametrize("missing", ckpt.REQUIRED)
def test_resolve_rejects_an_incomplete_checkpoint(tmp_path, missing):
    folder = fake_checkpoint(tmp_path / ckpt.ckpt_name(6), [f for f in ckpt.REQUIRED if f != missing])
    for path in (folder, tmp_path):  # named directly, or as its run's latest
        with pytest.raises(ckpt.CheckpointError, match=f"incomplete checkpoint, missing {missing}$"):
            ckpt.resolve(str(path))


def test_resolve_names_a_run_without_checkpoints(tmp_path):
    fake_checkpoint(tmp_path / f".tmp_{ckpt.ckpt_name(6)}_0123abcd")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint folder"):
        ckpt.resolve(str(tmp_path))
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint or run folder"):
        ckpt.resolve(str(tmp_path / "nowhere"))
