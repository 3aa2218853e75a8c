"""Command line shared by run_decode.py (ancestral sampling) and run_decode_solver.py (DPM-Solver++)."""
import argparse
import os
import sys
import time

import torch

from . import dist
from .checkpoint import CheckpointError
from .config import HelpFormatter, _bool
from .data.dataset import DataError, read_inputs
from .decoding import decode_file, load_model, write_mbr
from .pipeline import INITS, LENGTHS
from .family import SAMPLERS, get_sampler
from .tokenizer import TokenizerError
from .choice import describe


def decode_parser(solver):
    p = argparse.ArgumentParser(
        description=("Decode with multistep DPM-Solver++ in a few steps (--sampler picks another decoder)."
                     if solver else "Decode with ancestral sampling over respaced timesteps (--sampler picks "
                                    "another decoder).")
        + " Inputs: a split of the data folder (--split), or any file (--input): jsonl with \"src\" "
          "(and \"trg\", the reference, if there is one), or plain text, one source per line. Writes "
          "<out_dir>/<run>_<checkpoint>/<name>.seed<S>.step<K>[.source<t>[.edits<E>]][.lengths<N>].jsonl with one {source, reference, recover} "
          "object per input, in input order (no reference where the input has none). --input - reads "
          "sources from standard input and prints one output line per input.",
        formatter_class=HelpFormatter)
    p.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                   help="; ".join(f"{s.name}: {s.about}" for s in SAMPLERS.values())
                   + ". original-v1 and original-v2 are the original code's decoders, exactly (docs/reproduce.md). "
                   + "Default: " + ("dpm" if solver else "ancestral") + " for Gaussian models; for masked models "
                   "the checkpoint's saved choice, else topk")
    p.add_argument("--model_dir", required=True,
                   help="a checkpoint folder (ckpt_NNNNNNN) or a run folder (its best checkpoint by validation loss, else its latest)")
    p.add_argument("--split", default="test", help="which <split>.jsonl of the data folder to decode")
    p.add_argument("--data_dir", default=None, help="data folder (default: the one the model was trained on)")
    p.add_argument("--input", default=None,
                   help="decode this file instead of a split: .jsonl ({\"src\": ...} per line, \"trg\" optional) "
                        "or plain text (one source per line); -: standard input to standard output")
    p.add_argument("--step", type=int, default=None,
                   help="solver steps (model calls = step + 1; default: the checkpoint's saved choice, "
                        "else 10)" if solver
                   else "number of respaced timesteps (default: the checkpoint's saved choice, else 50)")
    p.add_argument("--init", choices=list(INITS), default=None,
                   help="noise: start from pure noise (the original's way); source: start from the source "
                        "laid over the target region and noised to --t_start, so the model edits it "
                        "(default: the checkpoint's saved choice, else noise)")
    p.add_argument("--t_start", type=int, default=None,
                   help="training timestep the decoding starts from (default: the saved choice, else T-1 "
                        "for noise and 0.2 T for source)")
    p.add_argument("--edits", type=int, default=None,
                   help="passes of a source start: each pass after the first starts from the last one's "
                        "output, noised to --t_start again (default: the saved choice, else 1)")
    p.add_argument("--length_beam", type=int, default=None,
                   help="decode each input at this many target lengths around its region's (n, n-1, n+1, ...) "
                        "and keep the output the model is surest of (mean token log-probability); needs "
                        "--lengths predicted, source or longer (default: the saved choice, else 1)")
    p.add_argument("--absorb_rate", type=float, default=None,
                   help="DiffuSeq-v2's discrete noise while decoding: each step absorbs a target token into "
                        "the absorbing state m with probability absorb_rate x the step's noise std "
                        "(default: the saved choice, else the trained --denoise_rate for noise starts of "
                        "models trained with --denoise, 0 otherwise)")
    p.add_argument("--cleanup", choices=["cut", "original"], default=None,
                   help="how a target region becomes text: cut, at its first [SEP] or [PAD], without special "
                        "tokens; original, as the original's scoring: [CLS], [SEP] and [PAD] dropped wherever "
                        "they are, the rest ([UNK], words after a [SEP]) kept (default: original with the "
                        "original-v1 / original-v2 samplers, else cut)")
    p.add_argument("--use_saved", type=_bool, default=True,
                   help="take the settings not given here from the checkpoint's decoding.json, written by "
                        "tune_decode.py (false: the built-in defaults)")
    p.add_argument("--bsz", type=int, default=64, help="sentences per batch")
    p.add_argument("--seed", type=int, default=123, help="seed of the first sample; sample k uses seed + k")
    p.add_argument("--num_samples", type=int, default=1, help="candidates per input, one output file each")
    p.add_argument("--mbr", type=_bool, nargs="?", const=True, default=False,
                   help="with --num_samples N >= 2, also write the minimum-Bayes-risk pick of each input's N "
                        "outputs (the one with the highest mean BLEU against the others, as the DiffuSeq "
                        "paper selects) as <split>.mbr<N>.step<K>...jsonl")
    p.add_argument("--out_dir", default="generation_outputs",
                   help="where the output folder <run>_<checkpoint>/ is written")
    p.add_argument("--use_ema", type=_bool, default=True,
                   help="decode with the EMA weights (true) or the raw weights (false)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast of the denoiser. auto: fp32, except fp16 where the original decodes so: an "
                        "original-* sampler on a DiffuSeq-v2 model (learned absorbing state) on a GPU, as "
                        "DiffuSeq-v2's decoders run under CUDA fp16 autocast (on a CPU they run in fp32)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--compile", type=_bool, nargs="?", const=True, default=False,
                   help="torch.compile the denoiser (with CUDA graphs on GPU); pays off on long decodes")
    p.add_argument("--max_examples", type=int, default=None, help="decode only the first N inputs")
    p.add_argument("--progress", type=_bool, default=True,
                   help="show a progress bar (only on a terminal)")
    p.add_argument("--clamping", choices=["auto", "true", "false"], default="auto",
                   help="round each predicted z_0 to its nearest word embedding (the original's "
                        "clamping); auto: for ancestral sampling of models without a learned "
                        "absorbing state, as the original does")
    p.add_argument("--clamp_step", type=int, default=0,
                   help="with --clamp_first true, round from the last training timestep down to this "
                        "one; with --clamp_first false, from this one down to 0 (the original's meaning)")
    p.add_argument("--clamp_first", type=_bool, default=True,
                   help="see --clamp_step")
    p.add_argument("--lengths", choices=list(LENGTHS), default=None,
                   help="predicted: with a model trained with --length_head, give each input a target "
                        "region of its predicted length plus --length_margin; source: of the source's "
                        "length (any model); longer: the longer of the two; full: the whole sequence "
                        "(the original's way; so for models without a length head, but with source) "
                        "(default: the saved choice, else predicted)")
    p.add_argument("--length_margin", type=int, default=None,
                   help="positions past the predicted length where the model may still end its output "
                        "(default: the margin the model was trained with, or 4)")
    p.add_argument("--temperature", type=float, default=None,
                   help="masked models: the temperature of the tokens written (0: the most likely; default: the "
                        "saved choice, else 0 for topk and 1 for mdlm)")
    p.add_argument("--schedule", choices=["linear", "cosine"], default=None,
                   help="masked models: how the masked share falls over the steps (default: the saved choice, "
                        "else linear)")
    p.add_argument("--remask_mode", choices=["deterministic", "stochastic"], default=None,
                   help="masked models, topk: which written tokens are masked again, those of lowest "
                        "log-probability, or with Gumbel noise on it (default: the saved choice, else "
                        "deterministic)")
    p.add_argument("--dedup", type=_bool, nargs="?", const=True, default=None,
                   help="masked models: drop each token equal to the one before it (tokens written in parallel "
                        "repeat their neighbours; default: the saved choice, else false)")
    if solver:
        p.add_argument("--order", type=int, choices=[1, 2, 3], default=None, help="DPM-Solver++ order (default 2)")
        p.add_argument("--skip_type", choices=["logSNR", "time_uniform"], default=None,
                       help="step spacing: uniform in log signal-to-noise ratio (the default), or in time")
        p.add_argument("--sde", type=_bool, default=None,
                       help="solve the reverse SDE (SDE-DPM-Solver++, order 1 or 2, fresh noise each step) "
                            "instead of the probability-flow ODE (default false)")
        p.add_argument("--after_absorb", choices=["keep", "first"], default=None,
                       help="with absorption inside the solve: keep, the multistep history runs on across the "
                            "re-masks; first, the step after each absorption is first order (default first: "
                            "+2 to +3.5 BLEU on the Bible, a tie on QQP and IWSLT14)")
        p.add_argument("--remask", choices=["random", "confidence"], default=None,
                       help="which target tokens an absorption inside the solve sends back to m: random, each "
                            "with the step's probability; confidence, as many, those the model is least sure "
                            "of (as mask-predict) (default random)")
        p.add_argument("--final_call", type=_bool, default=True,
                       help="one more model call after the last step predicts z_0 from where the solve ends "
                            "(t = 1/T); false reads z there: --step calls instead of --step + 1, as the "
                            "original's solver (0.6 BLEU less on the Bible with 10 steps)")
    else:
        p.add_argument("--variance", choices=["small", "large"], default="small",
                       help="noise of each ancestral step: small, the posterior's beta~_t; large, beta_t "
                            "(the original's choice)")
    return p


def decode_dtype(precision, sampler, model):
    """The autocast dtype of the denoiser for --precision (None: fp32); see its help."""
    if precision == "auto":
        v2_code = (sampler or "").startswith("original-") and model.args.learned_mean_embed
        return torch.float16 if v2_code and model.device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def default_cleanup(sampler):
    """The original's decoders are scored as the original scores them, so their text is cleaned
    as it cleans it."""
    return "original" if sampler and sampler.startswith("original-") else "cut"


def main(argv=None, solver=False):
    args = decode_parser(solver).parse_args(argv)
    if args.cleanup is None:
        args.cleanup = default_cleanup(args.sampler)
    stream = args.input == "-"
    say = (lambda *a: print(*a, file=sys.stderr)) if stream else print
    proc = dist.setup(args.device)
    try:
        if stream and proc.world_size > 1:
            raise ValueError("--input - decodes in one process: run it without torchrun")
        if args.mbr and (stream or args.num_samples < 2):
            raise ValueError("--mbr picks among several output files: it needs --num_samples 2 or more and an "
                             "input file (not --input -)")
        inputs = read_inputs("-") if stream else None  # read before the model: nothing to wait on if bad
        model = load_model(args.model_dir, proc.device, args.use_ema, None, args.compile)
        model.dtype = decode_dtype(args.precision, args.sampler, model)
        kw = dict(clamping=None if args.clamping == "auto" else args.clamping == "true",
                  clamp_step=args.clamp_step, clamp_first=args.clamp_first, length_margin=args.length_margin)
        given = dict(steps=args.step, init=args.init, t_start=args.t_start, absorb_rate=args.absorb_rate,
                     lengths=args.lengths, edits=args.edits, length_beam=args.length_beam,
                     temperature=args.temperature, schedule=args.schedule, remask_mode=args.remask_mode,
                     dedup=args.dedup)
        if solver:
            given.update(order=args.order, skip=args.skip_type, sde=args.sde, after_absorb=args.after_absorb,
                         remask=args.remask)
            kw.update(final_call=args.final_call)
        else:
            kw.update(variance=args.variance)
        sampler = args.sampler or model.family.command_sampler(solver)
        settings = model.settings(sampler, args.use_saved, **given)
        settings.setdefault("steps", get_sampler(settings["sampler"]).steps(model.args.diffusion_steps))
        if proc.is_main:
            saved = " (saved choice: decoding.json)" if args.use_saved and model.saved else ""
            say(f"decoding with {describe(settings)}{saved}")
        if stream:
            if args.max_examples:
                inputs = inputs[:args.max_examples]
            t0 = time.time()
            for line in model.generate([s for s, _ in inputs], seed=args.seed, bsz=args.bsz, use_saved=False,
                                       cleanup=args.cleanup, **settings, **kw):
                print(line, flush=True)
            speed, paths = len(inputs) / max(time.time() - t0, 1e-9), []
        else:
            path = args.input or os.path.join(args.data_dir or model.args.data_dir, f"{args.split}.jsonl")
            paths, speed = decode_file(
                model, path, args.out_dir, seeds=[args.seed + k for k in range(args.num_samples)], bsz=args.bsz,
                proc=proc, progress=args.progress, max_examples=args.max_examples, cleanup=args.cleanup,
                **settings, **kw)
            if args.mbr and proc.is_main:
                paths.append(write_mbr(paths))
    except (CheckpointError, DataError, TokenizerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.cleanup()
    if proc.is_main:
        for p in paths:
            say(f"wrote {p}")
        say(f"{speed * proc.world_size:.3g} sentences/s ({model.weights}, {proc.world_size} process(es))")
    return 0
