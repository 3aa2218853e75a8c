"""Named training configurations: `python train.py --recipe NAME` starts from one of these, and
flags given on the command line still win. Every script, benchmark and test that trains a known
configuration takes it from here, so each recipe has one source.

A recipe is a plain dict of train.py arguments over the base layer (the defaults of
config.TrainConfig: many, not all, are the original DiffuSeq's; docs/recipes.md lists which).

    python -m diffuseq.recipes              # the table: name, what it is for
    python -m diffuseq.recipes bible-tiny   # its arguments, as flags
"""
import argparse
import sys
from dataclasses import dataclass, field

DEFAULT = "bible-tiny"


@dataclass(frozen=True)
class Recipe:
    name: str
    about: str
    args: dict = field(default_factory=dict)

    def flags(self, **over):
        """The recipe (with `over` on top) as command-line flags for train.py."""
        out = []
        for k, v in {**self.args, **over}.items():
            if v is not None:
                out += [f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)]
        return out


# The original DiffuSeq's QQP run (its scripts/train.sh and config.json): BERT-base shape, BERT
# vocabulary, 2,000 sqrt-scheduled steps, importance-sampled timesteps, linear decay from 1e-4 with
# no warm-up and no clipping, fp32 with TF32 products on GPUs (PyTorch 1.9's default, which it
# ran); its layout ([CLS] x [SEP] [SEP] [CLS] y [SEP]), its objective (every term averaged over
# every position) and its output head (tied, with a bias). The original's
# --bsz is per process (4 processes of 2,048, 64 per forward pass); --bsz here is the global batch,
# so 8,192 is the same batch on any number of GPUs (an uneven split gives some processes one more).
ORIGINAL = dict(dataset="qqp", data_dir="datasets/QQP", vocab="bert", preset="base", hidden_dim=128,
                seq_len=128, diffusion_steps=2000, noise_schedule="sqrt", schedule_sampler="lossaware",
                bsz=8192, microbatch=64, lr=1e-4, warmup_steps=0, lr_schedule="linear", learning_steps=50000,
                grad_clip=0.0, weight_decay=0.0, ema_rate=0.9999, dropout=0.1, seed=102, save_interval=10000,
                eval_interval=10000,  # a validation loss at every checkpoint, so the best can be chosen
                log_interval=20, length_head=False, length_margin=-1, segment_positions=False, t_min=0,
                layout="original", loss_positions="all", lm_bias=True, proj_when_needed=True, precision="tf32",
                ema_embedding="live", grad_accumulation="sum", sampler_update="microbatch", replicated_draws=True)

# The small-CPU recipe measured in docs/quality.md: DiffuSeq-v2 noise, positions counted per
# segment, a 16-dimensional embedding space, a noise floor, a length head, a constant rate.
SMALL = dict(preset="tiny", width=128, layers=2, heads=4, ffn=512, hidden_dim=16, vocab_size=4000,
             learned_mean_embed=True, denoise=True, segment_positions=True, t_min=600, length_head=True,
             diffusion_steps=2000, noise_schedule="sqrt", schedule_sampler="uniform",
             bsz=32, lr=1e-3, lr_schedule="constant", warmup_steps=50, ema_rate=0.99, dropout=0.0)

# The ablation ladder of docs/quality.md, trained by bench/bench_quality.py: each rung adds one
# change to the original DiffuSeq's model at the small recipe's shape and optimiser.
LADDER_BASE = dict(preset="tiny", width=128, layers=2, heads=4, ffn=512, hidden_dim=64, vocab_size=4000,
                   bsz=32, lr=1e-3, warmup_steps=50, ema_rate=0.99, schedule_sampler="uniform", dropout=0.0,
                   bucket=True, length_head=False, length_margin=-1)
V2 = dict(learned_mean_embed=True, denoise=True)
SEG = dict(segment_positions=True, hidden_dim=16)
FLOOR = dict(SEG, t_min=600)
LADDER = {
    "v1": ("the original DiffuSeq at the small shape", {}),
    "v2": ("+ DiffuSeq-v2's absorbing state and discrete noise", V2),
    "seg": ("+ positions per segment, D = 16", dict(V2, **SEG)),
    "seg-floor": ("+ a noise floor t_min = 600", dict(V2, **FLOOR)),
    "seg-floor-sc": ("+ self-conditioning", dict(V2, **FLOOR, self_cond=True)),
    "seg-floor-bias": ("+ an output bias", dict(V2, **FLOOR, lm_bias=True)),
    "seg-floor-sc-bias": ("+ self-conditioning and an output bias", dict(V2, **FLOOR, self_cond=True, lm_bias=True)),
    "v1-seg-floor-sc-bias": ("the same without v2's noise", dict(FLOOR, self_cond=True, lm_bias=True)),
    "seg-floor-len-m4": ("+ a length head, trained on target + 4 [PAD]s",
                         dict(V2, **FLOOR, length_head=True, length_margin=4)),
    "seg-floor-len-m8": ("+ a length head, target + 8 [PAD]s (the 2-layer default's model, bucketed, decaying rate)",
                         dict(V2, **FLOOR, length_head=True, length_margin=8)),
    "seg-floor-len-m8-nobucket": ("the same with random batches",
                                  dict(V2, **FLOOR, length_head=True, length_margin=8, bucket=False)),
    "seg-floor-len-m12": ("+ a length head, target + 12 [PAD]s",
                          dict(V2, **FLOOR, length_head=True, length_margin=12)),
    "seg-floor-len-m16": ("+ a length head, target + 16 [PAD]s",
                          dict(V2, **FLOOR, length_head=True, length_margin=16)),
    "seg-floor-len-batchpad": ("+ a length head, every position of the batch a target",
                               dict(V2, **FLOOR, length_head=True)),
    "seg-floor-sc-bias-len": ("+ self-conditioning, an output bias and a length head",
                              dict(V2, **FLOOR, self_cond=True, lm_bias=True, length_head=True)),
    "v1-seg-floor-sc-bias-len": ("the same without v2's noise",
                                 dict(FLOOR, self_cond=True, lm_bias=True, length_head=True)),
}

# The masked family (docs/quality.md): absorbing-state diffusion over tokens, the source visible, a
# length head and a margin of 8 [PAD]s, the word embedding as wide as the transformer (the output
# head is tied to it, so D = 16 would be a bottleneck of 16 numbers per token), no time input.
MASKED = dict(family="masked", preset="tiny", width=128, layers=4, heads=4, ffn=512, hidden_dim=128,
              vocab_size=4000, segment_positions=True, length_head=True, schedule_sampler="uniform",
              mask_weighting="rdm", time_cond=False, label_smoothing=0.1, visible_weight=1.0, learned_mean_embed=False,
              denoise=False, t_min=0, anchor_weight=0.0, bsz=32, lr=1e-3, lr_schedule="constant",
              warmup_steps=200, ema_rate=0.999, dropout=0.1)

RECIPES = {r.name: r for r in [
    Recipe("original-v1", "the original DiffuSeq's QQP run (ICLR 2023): BERT-base shape, 50k steps of "
           "global batch 8,192 (4 processes of 2,048 in passes of 64); GPUs and a BERT vocab.txt (--vocab_path) "
           "needed", ORIGINAL),
    Recipe("original-v2", "the original DiffuSeq-v2's QQP run: v1 plus the soft absorbing state, discrete "
           "noise at rate 0.5 and fp16, global batch 850 (2 processes of 425)",
           dict(ORIGINAL, learned_mean_embed=True, denoise=True, denoise_rate=0.5, precision="fp16",
                bsz=850, microbatch=425, save_interval=5000, eval_interval=5000, m_init="normal", m_reg="norm", reg_rate=0.01)),
    # 4 layers, lr 2e-3 and the anchor term: the best on valid at equal CPU minutes, and 11 BLEU more
    # from noise than 2 layers (docs/quality.md)
    Recipe("bible-tiny", "the default job: King James -> World English Bible verses, 4 layers, 3,000 steps, "
           "~13 minutes on a 2-core CPU",
           dict(SMALL, layers=4, lr=2e-3, anchor_weight=1.0, dataset="bible_kjv_web", data_dir="datasets/bible_kjv_web",
                seq_len=160, learning_steps=3000, save_interval=1000, eval_interval=1000)),
    # both directions: +0.85 and +1.0 BLEU on the valid pairs with two seeds, +0.8 to +1.1 held-out (docs/quality.md)
    Recipe("qqp-small", "the small recipe on ../shared/data/qqp_small (1,847 pairs, each also trained "
           "reversed): short sequences, weight decay against overfitting, frequent validation so the best "
           "checkpoint is kept",
           dict(SMALL, dataset="qqp_small", data_dir="../shared/data/qqp_small", seq_len=64, weight_decay=0.1,
                both_directions=True, learning_steps=4000, save_interval=500, eval_interval=500)),
    Recipe("iwslt14-small", "the small recipe on ../shared/data/iwslt14_small (German -> English, 6,783 "
           "pairs)", dict(SMALL, dataset="iwslt14_small", data_dir="../shared/data/iwslt14_small", seq_len=128,
                          learning_steps=9000, save_interval=1000, eval_interval=1000)),
    Recipe("bible-masked", "the masked family on the Bible (generation from every target token masked)",
           dict(MASKED, dataset="bible_kjv_web", data_dir="datasets/bible_kjv_web", seq_len=160,
                learning_steps=100000, save_interval=1000, eval_interval=1000)),
    Recipe("qqp-masked", "the masked family on ../shared/data/qqp_small, each pair also trained reversed",
           dict(MASKED, dataset="qqp_small", data_dir="../shared/data/qqp_small", seq_len=64, weight_decay=0.1,
                both_directions=True, learning_steps=100000, save_interval=500, eval_interval=500)),
    Recipe("iwslt14-masked", "the masked family on ../shared/data/iwslt14_small (German -> English)",
           dict(MASKED, dataset="iwslt14_small", data_dir="../shared/data/iwslt14_small", seq_len=128,
                learning_steps=100000, save_interval=1000, eval_interval=1000)),
    *[Recipe(f"ladder-{k}", about, dict(LADDER_BASE, **a)) for k, (about, a) in LADDER.items()],
]}


def get(name):
    """The recipe called `name`; a ValueError naming the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None


def markdown():
    """The recipes as a markdown table (docs/recipes.md holds it; a test keeps the two equal)."""
    rows = ["| recipe | what it is | its arguments (over the base layer) |", "|---|---|---|"]
    for r in RECIPES.values():
        rows.append(f"| `{r.name}` | {r.about} | `{' '.join(r.flags())}` |")
    return "\n".join(rows) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description="List the named training recipes, or print one's arguments.")
    p.add_argument("name", nargs="?", help="a recipe: print its train.py flags")
    p.add_argument("--markdown", action="store_true", help="print the table of docs/recipes.md")
    a = p.parse_args(argv)
    if a.markdown:
        print(markdown(), end="")
        return 0
    if a.name:
        try:
            print(" ".join(get(a.name).flags()))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    width = max(map(len, RECIPES))
    for r in RECIPES.values():
        print(f"{r.name:<{width}}  {r.about}{'  (the default)' if r.name == DEFAULT else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
