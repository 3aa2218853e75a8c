"""Command-line arguments of training, and the model configuration derived from them.

The saved `args.json` of a run holds every argument below, so a checkpoint folder describes
itself and decoding needs nothing else.
"""
import argparse
import json
import sys

from .model import PRESETS, DenoiserConfig
from .schedule import SCHEDULES


def _bool(s):
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each argument's default once: not for required arguments, flags that default to off,
    defaults of None, or help texts that already say what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.required or action.default in (None, False, argparse.SUPPRESS)
                or "default" in text.lower()):
            return text
        return super()._get_help_string(action)


def train_parser():
    p = argparse.ArgumentParser(
        description="Train a DiffuSeq / DiffuSeq-v2 sequence-to-sequence diffusion model on a folder "
                    "of train/valid/test.jsonl files ({\"src\": ..., \"trg\": ...} per line).",
        formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="bible_kjv_web", help="name of the dataset, used in the run folder's name")
    g.add_argument("--data_dir", default="datasets/bible_kjv_web",
                   help="folder with train.jsonl and valid.jsonl (test.jsonl for decoding)")
    g.add_argument("--seq_len", type=int, default=128,
                   help="length of [CLS] x [SEP] y [SEP]; the source is truncated first when a pair is longer")
    g.add_argument("--skip_bad_lines", action="store_true",
                   help="skip malformed jsonl lines (and report how many) instead of stopping at the first")
    g.add_argument("--bucket", type=_bool, default=False,
                   help="length bucketing: batches of similar lengths instead of random ones. With "
                        "--length_margin >= 0 every batch is padded only to its longest row + the margin, "
                        "so bucketing makes steps shorter (1.6x on the Bible data) but learns less per "
                        "step: at equal minutes the two tied (README, Quality)")
    g.add_argument("--length_margin", type=int, default=None,
                   help="[PAD]s after each target's [SEP] that the model learns to produce; the positions "
                        "after them are out of the loss and hidden from attention, so training costs "
                        "only real tokens and decoding at a predicted length (+ this margin) sees what "
                        "training saw. -1: every position up to the padded length is target, as the "
                        "original trains (default: 8 with a length head, -1 without)")
    g.add_argument("--vocab", choices=["own", "bert"], default="own",
                   help="own: train a tokenizer on the training split; bert: a local BERT vocab.txt (--vocab_path)")
    g.add_argument("--vocab_path", default=None, help="folder or vocab.txt of a BERT WordPiece vocabulary (--vocab bert)")
    g.add_argument("--vocab_size", type=int, default=8000, help="vocabulary size of the trained tokenizer (--vocab own)")
    g.add_argument("--tokenizer_algo", choices=["wordpiece", "bpe"], default="wordpiece",
                   help="algorithm of the trained tokenizer (--vocab own)")
    g.add_argument("--lowercase", type=_bool, default=True,
                   help="lowercase text before tokenizing; false keeps case (a cased vocabulary, e.g. for "
                        "translation into English; see the README for its cost in vocabulary)")

    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="transformer shape: " + "; ".join(
                       f"{k}: {v['layers']} layers, width {v['width']}, {v['heads']} heads, FFN {v['ffn']}"
                       for k, v in PRESETS.items()))
    g.add_argument("--width", type=int, default=None, help="override the preset's transformer width")
    g.add_argument("--layers", type=int, default=None, help="override the preset's number of layers")
    g.add_argument("--heads", type=int, default=None, help="override the preset's attention heads")
    g.add_argument("--ffn", type=int, default=None, help="override the preset's feed-forward size")
    g.add_argument("--hidden_dim", type=int, default=128, help="word-embedding size D (the space that is noised)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout rate of the transformer layers")
    g.add_argument("--init_from", default=None,
                   help="initialise the encoder from local BERT weights (a folder with model.safetensors or "
                        "pytorch_model.bin); the shape must match, e.g. --preset base for bert-base")
    g.add_argument("--segment_positions", type=_bool, default=False,
                   help="restart the target's position ids at 0 and add a segment embedding, so y_i and "
                        "x_i share a position (copying and monotone rewrites become a position match)")
    g.add_argument("--self_cond", type=_bool, default=False,
                   help="self-conditioning: the model also sees its previous estimate of z_0 (in training, "
                        "half the examples get one from a first pass without gradient)")
    g.add_argument("--lm_bias", type=_bool, default=False,
                   help="a learned bias on the tied output head (the original's lm_head has one)")
    g.add_argument("--length_head", type=_bool, default=True,
                   help="learn to predict the target's length from the source; decoding then gives each "
                        "example a target region of the predicted length (plus --length_margin), and "
                        "training needs no padding (false: the original's model, which learns the length "
                        "from trailing [PAD]s up to seq_len)")
    g.add_argument("--grad_checkpoint", action="store_true",
                   help="recompute layer activations in the backward pass: less memory, ~30%% more compute")

    g = p.add_argument_group("diffusion")
    g.add_argument("--diffusion_steps", type=int, default=2000, help="T, the number of training timesteps")
    g.add_argument("--noise_schedule", choices=SCHEDULES, default="sqrt",
                   help="how abar_t falls with t: sqrt (Diffusion-LM's, fast early noise, suits embeddings), "
                        "cosine or linear")
    g.add_argument("--schedule_sampler", choices=["uniform", "lossaware"], default="lossaware",
                   help="timestep sampler: uniform, or importance sampling by each timestep's recent losses")
    g.add_argument("--t_min", type=int, default=0,
                   help="noise floor: train only on timesteps >= t_min, where the target cannot be read "
                        "off z_t without the source; decoding then gives the model a time input of at "
                        "least t_min (0: off)")
    g.add_argument("--learned_mean_embed", type=_bool, nargs="?", const=True, default=False,
                   help="DiffuSeq-v2: noise the target toward a learned soft absorbing state m instead of 0 "
                        "(the flag alone means true)")
    g.add_argument("--reg_rate", type=float, default=0.01, help="L2 penalty on m (with --learned_mean_embed)")
    g.add_argument("--denoise", type=_bool, nargs="?", const=True, default=False,
                   help="DiffuSeq-v2 discrete noise: absorb target tokens into m with probability "
                        "denoise_rate * sqrt(1 - abar_t) (needs --learned_mean_embed; the flag alone "
                        "means true)")
    g.add_argument("--denoise_rate", type=float, default=0.5,
                   help="r of --denoise: the largest share of target tokens absorbed into m (at t = T)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--bsz", type=int, default=64, help="global batch size (over all processes)")
    g.add_argument("--microbatch", type=int, default=None,
                   help="examples per forward pass on each process; gradients are accumulated (default: all)")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of AdamW")
    g.add_argument("--warmup_steps", type=int, default=500, help="linear warm-up, then linear decay to 0")
    g.add_argument("--lr_schedule", choices=["linear", "constant"], default="linear",
                   help="after the warm-up: linear decay to 0 at learning_steps (the original's), or the "
                        "peak rate to the end")
    g.add_argument("--learning_steps", type=int, default=50000, help="total optimisation steps")
    g.add_argument("--max_minutes", type=float, default=0,
                   help="stop (and save) after this many minutes of training, even before learning_steps; "
                        "the learning-rate schedule still follows learning_steps (0: no limit)")
    g.add_argument("--weight_decay", type=float, default=0.0,
                   help="AdamW weight decay of the matrices (not of biases, norms or embeddings)")
    g.add_argument("--grad_clip", type=float, default=1.0, help="max gradient norm (0: off)")
    g.add_argument("--ema_rate", type=float, default=0.9999, help="decay of the exponential moving average of weights")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 autocast on GPUs that support it, fp32 on CPU (bf16 on a CPU pays only "
                        "with AVX512-BF16 or AMX instructions; elsewhere it is many times slower); "
                        "fp16 uses a grad scaler")
    g.add_argument("--use_fp16", action="store_true", help="alias of --precision fp16")
    g.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    g.add_argument("--pack", choices=["auto", "true", "false"], default="auto",
                   help="pack the kept positions of several examples into one row (each attending to its "
                        "own) when target regions leave much of a batch out: the same losses for fewer "
                        "positions. auto: on CPU; off on GPUs, where it would wait on the host each call "
                        "and break CUDA graphs")
    g.add_argument("--seed", type=int, default=102,
                   help="seed of every random draw (initialisation, batch order, timesteps, noise, dropout)")

    g = p.add_argument_group("run")
    g.add_argument("--checkpoint_path", default=None,
                   help="the run's folder (default: diffusion_models/diffuseq_<dataset>_<preset>[_<notes>])")
    g.add_argument("--notes", default="", help="free text kept in args.json and appended to the default run name")
    g.add_argument("--resume_checkpoint", default=None,
                   help="checkpoint folder, or run folder (its latest checkpoint), to continue exactly from")
    g.add_argument("--save_interval", type=int, default=10000, help="steps between checkpoints")
    g.add_argument("--log_interval", type=int, default=100, help="steps between log lines")
    g.add_argument("--eval_interval", type=int, default=2000, help="steps between validation losses (0: off)")
    g.add_argument("--eval_batches", type=int, default=8, help="batches of valid.jsonl per validation")
    g.add_argument("--keep_checkpoints", type=int, default=0,
                   help="keep only the newest N checkpoints, and the best by validation loss (0: all)")
    g.add_argument("--tune_decoding", type=_bool, default=False,
                   help="at the end, choose the decoding of the best checkpoint on valid.jsonl (tune_decode.py "
                        "with its defaults) and save it as that checkpoint's decoding.json")
    g.add_argument("--device", default="auto", help="where to train: auto (a GPU if there is one), cpu, cuda, cuda:1, ...")
    g.add_argument("--wandb", choices=["online", "offline", "disabled"], default="disabled",
                   help="log to Weights & Biases (needs the wandb package)")
    g.add_argument("--progress", type=_bool, default=True,
                   help="show a progress bar (only on a terminal: logs never get one)")
    return p


def explicit_keys(parser, argv):
    """Names of the arguments given on the command line (not left at their defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    for a in parser._actions:
        if a.option_strings and a.dest != "help":
            kw = {"nargs": a.nargs} if a.nargs is not None else {}
            if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                probe.add_argument(*a.option_strings, dest=a.dest, action="store_const", const=True,
                                   default=argparse.SUPPRESS)
            else:
                probe.add_argument(*a.option_strings, dest=a.dest, default=argparse.SUPPRESS, **kw)
    ns, _ = probe.parse_known_args(argv)
    return set(vars(ns))


def parse_train_args(argv=None):
    parser = train_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.explicit = sorted(explicit_keys(parser, argv))
    if args.use_fp16:
        args.precision = "fp16"
    if args.denoise and not args.learned_mean_embed:
        parser.error("--denoise absorbs tokens into the learned state m: add --learned_mean_embed")
    if args.microbatch is None:
        args.microbatch = args.bsz
    if args.length_margin is None:
        args.length_margin = 8 if args.length_head else -1
    elif args.length_margin >= 0 and not args.length_head:
        parser.error("--length_margin >= 0 trains on a few [PAD]s only, but a model without a length head "
                     "decodes the whole sequence: use --length_margin -1, or --length_head true")
    if args.checkpoint_path is None:
        name = f"diffuseq_{args.dataset}_{args.preset}" + (f"_{args.notes}" if args.notes else "")
        args.checkpoint_path = f"diffusion_models/{name.replace(' ', '_')}"
    return args


def model_config(args, vocab_size):
    shape = dict(PRESETS[args.preset])
    for k in ("width", "layers", "heads", "ffn"):
        if getattr(args, k, None) is not None:
            shape[k] = getattr(args, k)
    if shape["width"] % shape["heads"]:
        raise ValueError(f"width {shape['width']} is not divisible by {shape['heads']} heads")
    return DenoiserConfig(vocab_size=vocab_size, seq_len=args.seq_len, hidden_dim=args.hidden_dim,
                          dropout=args.dropout, diffusion_steps=args.diffusion_steps,
                          learned_mean_embed=args.learned_mean_embed,
                          grad_checkpoint=getattr(args, "grad_checkpoint", False),
                          segment_positions=getattr(args, "segment_positions", False),
                          self_cond=getattr(args, "self_cond", False),
                          lm_bias=getattr(args, "lm_bias", False),
                          length_head=getattr(args, "length_head", False), **shape)


def save_args(args, path):
    with open(path, "w") as f:
        json.dump(vars(args), f, indent=2, sort_keys=True)


def load_args(path):
    with open(path) as f:
        return argparse.Namespace(**json.load(f))
