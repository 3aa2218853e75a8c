"""Training curves: the run's curves.jsonl (one record per log line and per validation) drawn as
loss.png in the run folder, rewritten at every checkpoint.

    python -m diffuseq.plots diffusion_models/<run>      # draw it again by hand
"""
import os
import sys

from .logs import read_curves


def curves_by_step(run_dir):
    """(train records, valid records) of curves.jsonl as sorted (step, terms) lists; a resumed
    run's repeated steps keep the newest record."""
    train, valid = {}, {}
    for r in read_curves(run_dir):
        if "train" in r:
            train[r["step"]] = r["train"]
        if "valid" in r:
            valid[r["step"]] = r["valid"]
    return sorted(train.items()), sorted(valid.items())


def _family(run_dir):
    """The family of the run (its args.json; Gaussian when there is none), which names the curves."""
    from .config import load_args
    from .family import family_of, get_family
    try:
        return family_of(load_args(os.path.join(run_dir, "args.json")))
    except (OSError, ValueError):
        return get_family("gaussian")


def plot_curves(run_dir, out=None):
    """Draw loss.png (training and validation loss; rounding accuracy per quarter of the noise
    levels). Returns its path, or None when there is nothing to draw or matplotlib is missing."""
    train, valid = curves_by_step(run_dir)
    if not train:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [s for s, _ in train]
    ax1.plot(steps, [r["loss"] for _, r in train], label="train loss")
    if "mse" in train[0][1]:
        ax1.plot(steps, [r["mse"] for _, r in train], label="train mse", alpha=0.6)
    if valid:
        ax1.plot([s for s, _ in valid], [r["loss"] for _, r in valid], "o-", label="valid loss")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("loss")
    ax1.legend()
    title, quarters = _family(run_dir).accuracy
    for k, label in zip(("acc_q1", "acc_q2", "acc_q3", "acc_q4"), quarters):
        pts = [(s, r[k]) for s, r in train if k in r and r[k] == r[k]]
        if pts:
            ax2.plot(*zip(*pts), label=label)
    pts = [(s, r["acc"]) for s, r in train if "acc" in r]
    if pts:
        ax2.plot(*zip(*pts), "k--", label="all levels")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.set_title(title)
    ax2.legend(fontsize=8)
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    out = out or os.path.join(run_dir, "loss.png")
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m diffuseq.plots RUN_FOLDER")
    path = plot_curves(sys.argv[1])
    print(path or "nothing to draw (no curves.jsonl, or matplotlib is not installed)")
