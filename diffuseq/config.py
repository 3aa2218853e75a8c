"""The training configuration: one typed record of every train.py argument, the parser built
from it, and the model configuration derived from it.

Layers, bottom to top: the defaults of TrainConfig (the base layer: what an argument left out of
an older run's args.json means), then the named recipe (`--recipe`, default bible-tiny, see
recipes.py), then the flags given on the command line. A run saves its TrainConfig as
`args.json`, so a checkpoint folder describes itself and decoding needs nothing else.
"""
import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from typing import Optional

from . import recipes
from .family import foreign_options
from .model import PRESETS, DenoiserConfig
from .schedule import SCHEDULES


def _bool(s):
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def arg(default, group, help, **kw):
    """A field of TrainConfig that is also a command-line argument of `group`."""
    return field(default=default, metadata=dict(group=group, help=help, **kw))


SHAPES = "; ".join(f"{k}: {v['layers']} layers, width {v['width']}, {v['heads']} heads, FFN {v['ffn']}"
                   for k, v in PRESETS.items())


@dataclass
class TrainConfig:
    """Every argument of train.py, typed, with its base-layer default."""
    recipe: Optional[str] = arg(None, "recipe", "start from this named configuration (python -m diffuseq.recipes "
                                "lists them); flags given on the command line still win")
    dataset: str = arg('bible_kjv_web', 'data', "name of the dataset, used in the run folder's name")
    data_dir: str = arg('datasets/bible_kjv_web', 'data',
        'folder with train.jsonl and valid.jsonl (test.jsonl for decoding)')
    seq_len: int = arg(128, 'data',
        'length of [CLS] x [SEP] y [SEP]; the source is truncated first when a pair is longer')
    skip_bad_lines: bool = arg(False, 'data',
        'skip malformed jsonl lines (and report how many) instead of stopping at the first')
    both_directions: bool = arg(False, 'data',
        'also train on every training pair reversed (target -> source), twice the pairs, for tasks where either '
        'side may be the input, such as paraphrase (qqp-small; docs/quality.md); validation keeps its direction')
    bucket: bool = arg(False, 'data',
        'length bucketing: batches of similar lengths instead of random ones. With --length_margin >= 0 every '
        'batch is padded only to its longest row + the margin, so bucketing makes steps shorter (1.6x on the '
        'Bible data) but learns less per step: at equal minutes the two tied (docs/quality.md)')
    length_margin: Optional[int] = arg(None, 'data',
        "[PAD]s after each target's [SEP] that the model learns to produce; the positions after them are out "
        'of the loss and hidden from attention, so training costs only real tokens and decoding at a '
        'predicted length (+ this margin) sees what training saw. -1: every position up to the padded length '
        'is target, as the original trains (default: 8 with a length head, -1 without)')
    layout: str = arg('ours', 'data',
        "how a pair is laid out: ours, [CLS] x [SEP] y [SEP] with the source cut first when too long; original, "
        "the original DiffuSeq's [CLS] x [SEP] [SEP] [CLS] y [SEP], the longer side cut first",
        choices=['ours', 'original'])
    vocab: str = arg('own', 'data',
        'own: train a tokenizer on the training split; bert: a local BERT vocab.txt (--vocab_path)',
        choices=['own', 'bert'])
    vocab_path: Optional[str] = arg(None, 'data',
        'folder or vocab.txt of a BERT WordPiece vocabulary (--vocab bert)')
    vocab_size: int = arg(8000, 'data', 'vocabulary size of the trained tokenizer (--vocab own)')
    tokenizer_algo: str = arg('wordpiece', 'data',
        'algorithm of the trained tokenizer (--vocab own)', choices=['wordpiece', 'bpe'])
    lowercase: bool = arg(True, 'data',
        'lowercase text before tokenizing; false keeps case (a cased vocabulary, e.g. for translation into '
        'English; docs/training.md gives its cost in vocabulary)')
    preset: str = arg("tiny", "model", "transformer shape: " + SHAPES, choices=sorted(PRESETS))
    width: Optional[int] = arg(None, 'model', "override the preset's transformer width")
    layers: Optional[int] = arg(None, 'model', "override the preset's number of layers")
    heads: Optional[int] = arg(None, 'model', "override the preset's attention heads")
    ffn: Optional[int] = arg(None, 'model', "override the preset's feed-forward size")
    hidden_dim: int = arg(128, 'model', 'word-embedding size D (the space that is noised)')
    dropout: float = arg(0.1, 'model', 'dropout rate of the transformer layers')
    embed_std: float = arg(1.0, 'model',
        'std of the word embeddings at initialisation (1: the scale of the Gaussian noise, which the Gaussian '
        'family wants)')
    init_from: Optional[str] = arg(None, 'model',
        'initialise the encoder from local BERT weights (a folder with model.safetensors or '
        'pytorch_model.bin); the shape must match, e.g. --preset base for bert-base')
    segment_positions: bool = arg(False, 'model',
        "restart the target's position ids at 0 and add a segment embedding, so y_i and x_i share a position "
        '(copying and monotone rewrites become a position match)')
    self_cond: bool = arg(False, 'model',
        'self-conditioning: the model also sees its previous estimate of z_0 (in training, half the examples '
        'get one from a first pass without gradient)')
    lm_bias: bool = arg(False, 'model', "a learned bias on the tied output head (the original's lm_head has one)")
    proj_when_needed: bool = arg(False, 'model',
        "as the original: no up and down projections around the transformer when --hidden_dim equals its width "
        '(false: always there)')
    length_head: bool = arg(False, 'model',
        "learn to predict the target's length from the source; decoding then gives each example a target "
        'region of the predicted length (plus --length_margin), and training needs no padding (false: the '
        "original's model, which learns the length from trailing [PAD]s up to seq_len)")
    grad_checkpoint: bool = arg(False, 'model',
        'recompute layer activations in the backward pass: less memory, ~30%% more compute')
    family: str = arg('gaussian', 'diffusion',
        "the model family: gaussian, DiffuSeq's diffusion over word embeddings (and DiffuSeq-v2's); masked, "
        "absorbing-state diffusion over tokens, each target token masked with probability t and the model "
        "trained with the cross-entropy of the masked ones (docs/training.md)", choices=['gaussian', 'masked'])
    mask_weighting: str = arg('mdlm', 'diffusion',
        "masked family: the weight of the cross-entropy at masking rate t: mdlm, 1/t (the ELBO); rdm, 1 - t "
        "(RDM's linear reweighting); none, the plain mean over the masked tokens", choices=['mdlm', 'rdm', 'none'])
    time_cond: bool = arg(True, 'diffusion',
        'masked family: the model is told the masking rate (false: it sees t = 0 always, and a decoder may skip '
        'a model call where nothing changed)')
    label_smoothing: float = arg(0.0, 'diffusion', 'masked family: label smoothing of the cross-entropy')
    visible_weight: float = arg(0.0, 'diffusion',
        'masked family: weight of a cross-entropy on the target tokens left visible, which trains the path '
        'from a token to its output (the masked positions reach it only through attention) (0: off)')
    coupled: bool = arg(False, 'diffusion',
        "masked family: RDM's coupled draws, each example trained at two masking rates with nested masks "
        '(twice the forward passes per step)')
    diffusion_steps: int = arg(2000, 'diffusion', 'T, the number of training timesteps')
    noise_schedule: str = arg('sqrt', 'diffusion',
        "how abar_t falls with t: sqrt (Diffusion-LM's, fast early noise, suits embeddings), cosine or linear",
        choices=list(SCHEDULES))
    schedule_sampler: str = arg('lossaware', 'diffusion',
        "timestep sampler: uniform, or importance sampling by each timestep's recent losses",
        choices=['uniform', 'lossaware'])
    t_min: int = arg(0, 'diffusion',
        'noise floor: train only on timesteps >= t_min, where the target cannot be read off z_t without the '
        "source; decoding then gives the model a time input of at least t_min (0: off). A recipe's floor "
        'scales with a --diffusion_steps given on the command line (600 of 2000 becomes 30 of 100)')
    anchor_weight: float = arg(0.0, 'diffusion',
        "weight of the anchor term: the cross-entropy of the tokens rounded from the model's predicted z_0 "
        '(Difformer), beside the mean square error, so the denoiser is trained to commit to one token where '
        'the alternatives are unsure (0: off, the original objective)')
    source_rate: float = arg(0.0, 'diffusion',
        'editor training: the share of training examples whose target part starts from the source laid over '
        'it (as a decoding --init source does) instead of from the target, noised to a time drawn uniformly '
        'from 0..--source_t_max and told that time, below the noise floor too, and source starts decode with '
        'the true time (0: off; needs --schedule_sampler uniform). Measured on the Bible, it made source '
        'starts much worse (docs/decoding.md)')
    source_t_max: int = arg(400, 'diffusion',
        'the largest timestep of --source_rate examples: 0.2 T, the --t_start a source start takes when '
        'nobody says (it follows a --diffusion_steps given on the command line)')
    learned_mean_embed: bool = arg(False, 'diffusion',
        'DiffuSeq-v2: noise the target toward a learned soft absorbing state m instead of 0 (the flag alone '
        'means true)')
    reg_rate: float = arg(0.01, 'diffusion', 'L2 penalty on m (with --learned_mean_embed)')
    m_reg: str = arg('squared', 'diffusion',
        "form of the penalty on m: squared, reg_rate * |m|^2 / D; norm, reg_rate * |m| (the original's)",
        choices=['squared', 'norm'])
    m_init: str = arg('zeros', 'diffusion',
        "m at the start: zeros, or normal, N(0, 1/D) (the original's)", choices=['zeros', 'normal'])
    loss_positions: str = arg('target', 'diffusion',
        "where the loss terms are averaged: target, the target part only; all, every position, source and "
        "separators included, with tT measured from 0 (the original's objective)", choices=['target', 'all'])
    denoise: bool = arg(False, 'diffusion',
        'DiffuSeq-v2 discrete noise: absorb target tokens into m with probability denoise_rate * sqrt(1 - '
        'abar_t) (needs --learned_mean_embed; the flag alone means true)')
    denoise_rate: float = arg(0.5, 'diffusion',
        'r of --denoise: the largest share of target tokens absorbed into m (at t = T)')
    bsz: int = arg(64, 'optimisation', 'global batch size (over all processes)')
    microbatch: Optional[int] = arg(None, 'optimisation',
        "examples per forward pass on each process; gradients are accumulated over a step's passes (not set: "
        "the process's whole share of the batch in one pass)")
    lr: float = arg(0.0001, 'optimisation', 'peak learning rate of AdamW')
    warmup_steps: int = arg(500, 'optimisation',
        'steps of linear warm-up to --lr; after them --lr_schedule sets the rate (linear decay to 0, or '
        'constant)')
    lr_schedule: str = arg('linear', 'optimisation',
        "after the warm-up: linear decay to 0 at learning_steps (the original's), or the peak rate to the end",
        choices=['linear', 'constant'])
    learning_steps: int = arg(50000, 'optimisation', 'total optimisation steps')
    max_minutes: float = arg(0, 'optimisation',
        'stop (and save) after this many minutes of training, even before learning_steps; the learning-rate '
        'schedule still follows learning_steps (0: no limit)')
    weight_decay: float = arg(0.0, 'optimisation',
        'AdamW weight decay of the matrices (not of biases, norms or embeddings)')
    grad_clip: float = arg(1.0, 'optimisation', 'max gradient norm (0: off)')
    ema_rate: float = arg(0.9999, 'optimisation', 'decay of the exponential moving average of weights')
    ema_embedding: str = arg('ema', 'optimisation',
        "the word embedding of the EMA weights (ema.safetensors, what decoding reads): its moving average, or "
        "the live one (live: the original's EMA files keep the live word embedding, so its decoders use the "
        "averaged denoiser with the live embedding for the start, rounding and logits)", choices=['ema', 'live'])
    grad_accumulation: str = arg('mean', 'optimisation',
        "how a step's microbatches make its gradient: mean, the gradient of the mean loss over the global batch; "
        "sum, each microbatch's mean loss back-propagated and the gradients added (the original's: the "
        "gradient is then the number of microbatches per process times the mean, which changes an AdamW step "
        "only through its epsilon and through clipping)", choices=['mean', 'sum'])
    sampler_update: str = arg('log', 'optimisation',
        "when the loss-aware timestep sampler learns the losses: log, those of every process at each log line "
        "(one gather); microbatch, after every microbatch, and each microbatch's timesteps are drawn from the "
        "sampler as it then stands (the original's)", choices=['log', 'microbatch'])
    replicated_draws: bool = arg(False, 'optimisation',
        "every process draws the same timesteps, noise and dropout for its share of the batch, as the original "
        "does (it seeds every process alike): a step then has only global batch / processes independent draws "
        "(false: independent draws for the whole global batch)")
    precision: str = arg('auto', 'optimisation',
        'auto: bf16 autocast on GPUs that support it, fp32 on CPU (bf16 on a CPU pays only with AVX512-BF16 '
        'or AMX instructions; elsewhere it is many times slower); fp16 uses a grad scaler; tf32: fp32 with TF32 '
        "matrix products on GPUs that have them (the original's A100 runs, under PyTorch 1.9's defaults)",
        choices=['auto', 'fp32', 'tf32', 'bf16', 'fp16'])
    use_fp16: bool = arg(False, 'optimisation', 'alias of --precision fp16')
    compile: bool = arg(False, 'optimisation', 'torch.compile the denoiser')
    pack: str = arg('auto', 'optimisation',
        'pack the kept positions of several examples into one row (each attending to its own) when target '
        'regions leave much of a batch out: the same losses for fewer positions. auto: on CPU; off on GPUs, '
        'where it would wait on the host each call and break CUDA graphs', choices=['auto', 'true', 'false'])
    seed: int = arg(102, 'optimisation',
        'seed of every random draw (initialisation, batch order, timesteps, noise, dropout)')
    checkpoint_path: Optional[str] = arg(None, 'run',
        "the run's folder (default: diffusion_models/diffuseq_<dataset>_<preset>[_<notes>])")
    notes: str = arg('', 'run', 'free text kept in args.json and appended to the default run name')
    resume_checkpoint: Optional[str] = arg(None, 'run',
        'checkpoint folder, or run folder (its latest checkpoint), to continue exactly from')
    save_interval: int = arg(10000, 'run', 'steps between checkpoints')
    log_interval: int = arg(100, 'run', 'steps between log lines')
    eval_interval: int = arg(2000, 'run', 'steps between validation losses (0: off)')
    eval_batches: int = arg(8, 'run', 'batches of valid.jsonl per validation')
    keep_checkpoints: int = arg(0, 'run',
        'keep only the newest N checkpoints, and the best by validation loss (0: all)')
    tune_decoding: bool = arg(False, 'run',
        'at the end, choose the decoding of the best checkpoint on valid.jsonl (tune_decode.py with its '
        "defaults) and save it as that checkpoint's decoding.json")
    device: str = arg('auto', 'run', 'where to train: auto (a GPU if there is one), cpu, cuda, cuda:1, ...')
    wandb: str = arg('disabled', 'run',
        'log to Weights & Biases (needs the wandb package)', choices=['online', 'offline', 'disabled'])
    progress: bool = arg(True, 'run', 'show a progress bar (only on a terminal: logs never get one)')
    explicit: list = field(default_factory=list)  # the arguments given on the command line

    @classmethod
    def from_dict(cls, d):
        """A config from a saved args.json's dict. Arguments newer than the run take the
        base-layer default, which keeps such a run's behaviour; unknown keys (from a newer
        version) are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values.setdefault("length_margin", -1)  # runs before margins trained every position up to seq_len
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _arg_fields():
    return [f for f in dataclasses.fields(TrainConfig) if "group" in f.metadata]


def _arg_type(f):
    """(argparse type, whether the argument is a true/false switch) of a field."""
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    if typing.get_origin(t) is typing.Union:  # Optional[X]
        t = next(a for a in typing.get_args(t) if a is not type(None))
    if t is bool:
        return _bool, True
    return (None if t is str else t), False


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each argument's default once: not for required arguments, defaults of None, or help
    texts that already say what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required or action.default in (None, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def train_parser(recipe=recipes.DEFAULT):
    """The parser of train.py, its defaults those of `recipe` over the base layer (so --help shows
    the values a run would get)."""
    p = argparse.ArgumentParser(
        description="Train a DiffuSeq / DiffuSeq-v2 sequence-to-sequence diffusion model on a folder "
                    "of train/valid/test.jsonl files ({\"src\": ..., \"trg\": ...} per line). "
                    "True/false arguments take a value (--denoise false) or stand alone for true.",
        formatter_class=HelpFormatter)
    groups = {}
    for f in _arg_fields():
        g = f.metadata["group"]
        if g not in groups:
            groups[g] = p.add_argument_group(g)
        typ, switch = _arg_type(f)
        kw = dict(default=f.default, help=f.metadata["help"])
        if switch:
            kw.update(type=_bool, nargs="?", const=True, metavar="true|false")
        elif typ is not None:
            kw["type"] = typ
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        groups[g].add_argument(f"--{f.name}", **kw)
    p.set_defaults(recipe=recipe)
    if recipe is not None:
        p.set_defaults(**recipes.get(recipe).args)
    return p


def explicit_keys(parser, argv):
    """Names of the arguments given on the command line (not left at their defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    for a in parser._actions:
        if a.option_strings and a.dest != "help":
            kw = {"nargs": a.nargs} if a.nargs is not None else {}
            probe.add_argument(*a.option_strings, dest=a.dest, default=argparse.SUPPRESS, **kw)
    ns, _ = probe.parse_known_args(argv)
    return set(vars(ns))


def _probe(argv):
    """(--recipe, --preset) as named in argv (the default recipe, and None, when they are not)."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--recipe", default=recipes.DEFAULT)
    probe.add_argument("--preset", default=None)
    ns, _ = probe.parse_known_args(argv)
    return ns.recipe, ns.preset


def parse_train_args(argv=None):
    """argv -> TrainConfig (exits with a usage message on bad arguments)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name, preset = _probe(argv)
    if name not in recipes.RECIPES:
        train_parser().error(f"argument --recipe: unknown recipe {name!r}; choose from {', '.join(recipes.RECIPES)}")
    parser = train_parser(name)
    if preset in PRESETS:  # a preset on the command line sets the whole shape over the recipe's
        parser.set_defaults(**PRESETS[preset])
    args = vars(parser.parse_args(argv))
    args["explicit"] = sorted(explicit_keys(parser, argv))
    T0 = parser.get_default("diffusion_steps")
    for k in ("t_min", "source_t_max"):
        if args["diffusion_steps"] != T0 and k not in args["explicit"]:
            # a recipe's timesteps are shares of its T: they follow a T given on the command line
            args[k] = round(args[k] * args["diffusion_steps"] / T0)
    if args["use_fp16"]:
        args["precision"] = "fp16"
    if args["denoise"] and not args["learned_mean_embed"]:
        parser.error("--denoise absorbs tokens into the learned state m: add --learned_mean_embed")
    if args["microbatch"] is None:
        args["microbatch"] = args["bsz"]
    if (args["length_head"] and "length_head" in args["explicit"] and args["length_margin"] == -1
            and "length_margin" not in args["explicit"]):
        parser.error(f"--length_head true on recipe {name} keeps its --length_margin -1 (every position up to "
                     "seq_len is target, so the head saves nothing): give --length_margin too, e.g. 8 (8 [PAD]s "
                     "after each target are learnt), or -1 to keep every position")
    if args["length_margin"] is None:
        args["length_margin"] = 8 if args["length_head"] else -1
    elif args["length_margin"] >= 0 and not args["length_head"]:
        parser.error("--length_margin >= 0 trains on a few [PAD]s only, but a model without a length head "
                     "decodes the whole sequence: use --length_margin -1, or --length_head true")
    if not 0 <= args["t_min"] < args["diffusion_steps"]:
        parser.error(f"--t_min {args['t_min']} must lie in [0, --diffusion_steps {args['diffusion_steps']})")
    if args["anchor_weight"] < 0:
        parser.error(f"--anchor_weight {args['anchor_weight']} is a weight: give a value >= 0")
    if not 0.0 <= args["source_rate"] <= 1.0:
        parser.error(f"--source_rate {args['source_rate']} is a share: give a value in [0, 1]")
    if args["source_rate"] > 0 and args["schedule_sampler"] != "uniform":
        parser.error("--source_rate draws the times of its examples itself: use --schedule_sampler uniform")
    if not 0 <= args["source_t_max"] < args["diffusion_steps"]:
        parser.error(f"--source_t_max {args['source_t_max']} must lie in [0, --diffusion_steps "
                     f"{args['diffusion_steps']})")
    clash = foreign_options(args["family"], args)
    if args["resume_checkpoint"] and "recipe" not in args["explicit"]:
        # a resumed run takes its saved options, not the default recipe's: only those given now can clash
        clash = [k for k in clash if k in args["explicit"]]
    if clash:
        parser.error(f"--family {args['family']} does not use {', '.join('--' + k for k in clash)} (options of "
                     f"another family, here from recipe {name} or the command line): start from a recipe of the "
                     "family (python -m diffuseq.recipes lists them) or set them off")
    if not 0.0 <= args["label_smoothing"] < 1.0:
        parser.error(f"--label_smoothing {args['label_smoothing']} is a share: give a value in [0, 1)")
    if args["checkpoint_path"] is None:
        name = f"diffuseq_{args['dataset']}_{args['preset']}" + (f"_{args['notes']}" if args["notes"] else "")
        args["checkpoint_path"] = f"diffusion_models/{name.replace(' ', '_')}"
    return TrainConfig(**args)


def model_config(args, vocab_size):
    shape = dict(PRESETS[args.preset])
    for k in ("width", "layers", "heads", "ffn"):
        if getattr(args, k) is not None:
            shape[k] = getattr(args, k)
    if shape["width"] % shape["heads"]:
        raise ValueError(f"width {shape['width']} is not divisible by {shape['heads']} heads")
    return DenoiserConfig(vocab_size=vocab_size, seq_len=args.seq_len, hidden_dim=args.hidden_dim,
                          dropout=args.dropout, diffusion_steps=args.diffusion_steps,
                          learned_mean_embed=args.learned_mean_embed, grad_checkpoint=args.grad_checkpoint,
                          segment_positions=args.segment_positions, self_cond=args.self_cond,
                          lm_bias=args.lm_bias, length_head=args.length_head, m_init=args.m_init,
                          proj_when_needed=args.proj_when_needed, embed_std=args.embed_std, **shape)


def save_args(args, path):
    with open(path, "w") as f:
        json.dump(args.to_dict(), f, indent=2, sort_keys=True)


def load_args(path):
    """A run's args.json -> TrainConfig; a ValueError naming the file when it is not one."""
    try:
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return TrainConfig.from_dict(d)
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a run's arguments ({e})") from None


def argument_table(parser=None):
    """The arguments of train.py as markdown tables, one per group, with the defaults --help
    shows (docs/training.md holds this; a test keeps the two equal)."""
    parser = parser or train_parser()
    out = []
    for g in parser._action_groups:
        rows = [a for a in g._group_actions if a.option_strings and a.dest != "help"]
        if not rows:
            continue
        out += [f"**{g.title}**", "", "| argument | default | meaning |", "|---|---|---|"]
        for a in rows:
            choices = f" ({'/'.join(map(str, a.choices))})" if a.choices else ""
            default = "" if a.default is None else str(a.default).lower() if isinstance(a.default, bool) \
                else str(a.default)
            text = (a.help or "").replace("%%", "%").replace("|", "\\|")
            out.append(f"| `--{a.dest}`{choices} | {default} | {text} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(argument_table(), end="")
