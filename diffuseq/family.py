"""Model families: what differs between a diffusion over word embeddings (the Gaussian family,
DiffuSeq and DiffuSeq-v2) and a diffusion over tokens with an absorbing [MASK] state (the masked
family), behind one small interface. Everything else is shared: the denoiser, the layout, the
length rule, the trainer's loop, checkpoints, the decode commands and the scorer.

A family is one object with

    draw(objective, step, ids, mask, keep, sampler, index, seed)  the random draws of a batch
    losses(objective, net, ids, mask, draws, keep, monitor)       the loss terms [B] ("loss" summed)
    decode(pipe, ids, mask, keep, dec, generator, progress)       one whole decoding of a batch:
                                                                  token ids [B, L] and the
                                                                  log-probability of each [B, L]
    samplers, default_sampler, grids, columns                     its decoders, the settings
                                                                  tune_decode.py searches, and
                                                                  what its log columns mean
    own_options                                                   the options only it reads
    prior, generation                                             how a decoding setting and a
                                                                  report name a start from the prior
    selection                                                     the validation column that
                                                                  picks a run's best checkpoint

A run's family is its `--family` argument, saved in args.json; a checkpoint of one family
decoded with another family's sampler, or resumed as another family, stops with one line.
"""
from .gaussian import GaussianFamily
from .masked import MaskedFamily

FAMILIES = {f.name: f for f in (GaussianFamily(), MaskedFamily())}
SAMPLERS = {name: s for f in FAMILIES.values() for name, s in f.samplers.items()}


def get_family(name):
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def family_of(args):
    """The family of a run's arguments (runs older than families are Gaussian)."""
    return get_family(getattr(args, "family", "gaussian"))


def foreign_options(name, args):
    """The options in args (train.py's arguments, a dict) that only another family than `name`
    reads and that are not off (time_cond and mask_weighting have no "off": they are ignored)."""
    return [k for f in FAMILIES.values() if f.name != name for k, off in f.own_options.items() if args[k] != off]


def get_sampler(name):
    """The sampler called `name`, of any family."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None


def check_sampler(family, name):
    """A ValueError in one line when sampler `name` decodes another family than `family`'s."""
    spec = get_sampler(name)
    if spec.family != family.name:
        raise ValueError(f"sampler {name} decodes {spec.family} models, and this checkpoint is of the {family.name} "
                         f"family: choose one of {', '.join(family.samplers)}")
    return spec
