"""The masked family: absorbing-state discrete diffusion over tokens (family.py has the interface).

Forward process. At time t in (0, 1], each position of the target region (its tokens, its [SEP]
and the --length_margin [PAD]s after it) is absorbed into [MASK] independently with probability
t (alpha_t = 1 - t, the linear schedule); the source stays visible. The same denoiser as the
Gaussian family reads the embeddings of the partly masked sequence and its output, through the
tied logits, predicts the tokens.

Loss. The cross-entropy of the masked tokens. Summed over the masked positions of an example and
divided by its region's size n, it is weighted by w(t):

    mdlm  w(t) = 1 / t: -alpha_t' / (1 - alpha_t). Its mean over t ~ U(0, 1) is the continuous-
          time ELBO of the masked diffusion (MDLM), a bound on -log p(y | x) / n;
    rdm   w(t) = 1 - t: RDM's linear reweighting, which trusts the less masked inputs more;
    none  the plain mean over an example's masked tokens (the masked-LM loss of CMLM; an example
          with none masked counts 0).

Options: label smoothing; a cross-entropy on the target tokens left visible (--visible_weight),
which trains the path from a token to its output that the masked positions reach only through
attention; RDM's coupled draws (each example trained twice, at two times whose
masks are nested, so one step sees the same target at two levels); time conditioning on or off
(off: the model sees t = 0 always, as MDLM finds the mask count tells it enough, and decoding can
then skip a model call where nothing changed).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .diffusion import length_term
from .masked_samplers import GRIDS, SAMPLERS, dedup
from .noise import draw_rows, step_generator

EPS = 1e-3  # the smallest time drawn: t ~ U(EPS, 1), so the weight 1 / t stays bounded
WEIGHTINGS = ("mdlm", "rdm", "none")

COLUMNS = ("columns: ce = the weighted cross-entropy of the masked target tokens (--mask_weighting); visible = "
           "--visible_weight x that of the visible ones (when set); length = 0.1 "
           "x cross-entropy of the length head; loss = their sum, the objective; grad_norm = before clipping; "
           "nll, acc = the plain cross-entropy and accuracy of the masked tokens; acc_q1..q4 = that accuracy in "
           "each quarter of the masking rates, q1 the least masked")


@dataclass
class MaskDraws:
    """The draws of one batch: levels t [B] (the masking rate as a training timestep, for the logs),
    weights w [B] (1), the masking rates rate [B] in (EPS, 1], uniforms u [B, L] (a position is
    masked where u < rate), and for coupled draws a second rate2 [B] and u2 [B, L]."""
    t: torch.Tensor
    w: torch.Tensor
    rate: torch.Tensor
    u: torch.Tensor
    rate2: torch.Tensor
    u2: torch.Tensor

    def part(self, sl):
        return MaskDraws(self.t[sl], self.w[sl], self.rate[sl], self.u[sl], self.rate2[sl], self.u2[sl])


def mask_weight(rate, weighting):
    """w(t) of a weighting (see the module's docstring) at masking rates rate [B]."""
    if weighting == "mdlm":
        return 1.0 / rate
    if weighting == "rdm":
        return 1.0 - rate
    if weighting == "none":
        return torch.ones_like(rate)
    raise ValueError(f"unknown mask weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def corrupt(ids, region, rate, u, mask_id):
    """q(z_t | x_0): each position of region [B, L] whose uniform u [B, L] is below its example's
    rate [B] becomes mask_id. Returns (z_t [B, L], which positions are masked [B, L] bool)."""
    masked = (u < rate[:, None]) & region.bool()
    return ids.masked_fill(masked, mask_id), masked


def nested(rate, rate2, u, u2):
    """RDM's coupled second draw: the higher of the two rates keeps u's mask, the lower a mask
    inside it (a position masked at the high rate stays masked at the low one with probability
    low / high, so its own rate is the low one). Returns (rates, uniforms) of the two draws [2B]."""
    hi, lo = torch.maximum(rate, rate2), torch.minimum(rate, rate2)
    inner = torch.where(u < hi[:, None], u2 * hi[:, None], torch.ones_like(u))  # < lo where masked at both
    return torch.cat([hi, lo]), torch.cat([u, inner])


def per_example(values, masked):
    """Sum of values [N] (one per masked position, row order) over each example: [B]."""
    example = masked.nonzero()[:, 0]
    return torch.zeros(masked.shape[0], dtype=values.dtype, device=values.device).index_add_(0, example, values)


class MaskedFamily:
    name = "masked"
    samplers = SAMPLERS
    grids = GRIDS
    columns = COLUMNS
    # the accuracy panel of loss.png: its title and the names of its four quarters (plots.py)
    accuracy = ("accuracy of the masked target tokens (the margin's [PAD]s included)",
                ("least masked quarter", "2nd quarter", "3rd quarter", "most masked quarter"))
    prior = "all masked"  # how a decoding setting names a start from the prior (choice.describe)
    generation = "from scratch"  # how a report names generation from the prior
    # the best checkpoint (best.json) has the lowest plain cross-entropy of the masked tokens, not
    # the lowest summed loss: the length head's and the visible tokens' terms overfit small data
    # while the masked tokens still improve (iwslt14_small: the summed loss is lowest at step
    # 2,000, which decodes at 2.0 BLEU; the masked tokens' at step 9,244, at 6.4)
    selection = "nll"

    # the options only this family reads, and the value that leaves each off (family.foreign_options)
    own_options = dict(visible_weight=0.0, coupled=False, label_smoothing=0.0)

    @staticmethod
    def default_sampler(solver=True):
        """What decoding runs when nobody says and nothing is saved: top-k re-masking."""
        return "topk"

    @staticmethod
    def output_tag(settings):
        """What an output file's name adds for these settings (decoding.output_path): the
        sampler and the options that change its output, so two decoders never share a file."""
        tag = f".{settings.get('sampler') or 'topk'}"
        for k in ("schedule", "remask_mode"):
            if settings.get(k):
                tag += f".{settings[k]}"
        tag += ".dedup" if settings.get("dedup") else ""
        if settings.get("temperature") is not None:
            tag += f".temp{settings['temperature']:g}"
        return tag

    @staticmethod
    def command_sampler(solver):
        """The sampler a decode command uses when not told: None, the best saved in decoding.json
        (else default_sampler), whichever command runs."""
        return None

    # ------------------------------------------------------------------ training
    def draw(self, objective, step, ids, mask, keep=None, sampler=None, index=None, seed=None):
        """The draws of a batch ids [B, L] at `step`, as the Gaussian family's: training draws for
        the global batch of --bsz (index [B] picks this process's rows), validation for these B
        examples from stream `seed`. The timestep sampler must be uniform (the rates are drawn
        here, uniform in (EPS, 1])."""
        a = objective.args
        batch, index = draw_rows(a, sampler, ids, index)
        g = step_generator(a.seed if seed is None else seed, step, "cpu")
        rate = EPS + (1 - EPS) * torch.rand(batch, generator=g)
        u = torch.rand(batch, a.seq_len, generator=g)[:, :ids.shape[1]]
        rate2 = EPS + (1 - EPS) * torch.rand(batch, generator=g)
        u2 = torch.rand(batch, a.seq_len, generator=g)[:, :ids.shape[1]]
        t = (rate * a.diffusion_steps).long().clamp(max=a.diffusion_steps - 1)
        d = MaskDraws(t, torch.ones(batch), rate, u, rate2, u2)
        if index is not None:
            d = d.part(index.cpu())
        dev = objective.device
        return MaskDraws(*(x.to(dev) for x in (d.t, d.w, d.rate, d.u, d.rate2, d.u2)))

    def losses(self, objective, net, ids, mask, d, keep=None, monitor=True):
        """The masked-diffusion loss of a batch ids, mask [B, L] with its draws d: the target
        region masked at each example's rate (twice, nested, with --coupled), the denoiser's
        logits at the masked positions, and the weighted cross-entropy (module docstring), plus
        the length head's term. Terms [B]: ce, length (with a length head), loss, and with
        monitor nll and acc."""
        a = objective.args
        tok = objective.layout.tokenizer
        y = mask
        region = mask if keep is None else mask * keep
        rate, u = d.rate, d.u
        if a.coupled:
            rate, u = nested(d.rate, d.rate2, d.u, d.u2)
            ids2, y2 = ids.repeat(2, 1), y.repeat(2, 1)
            region2, keep2 = region.repeat(2, 1), None if keep is None else keep.repeat(2, 1)
        else:
            ids2, y2, region2, keep2 = ids, y, region, keep
        zt, masked = corrupt(ids2, region2, rate, u, tok.mask_id)
        t_in = rate * a.diffusion_steps if a.time_cond else torch.zeros_like(rate)
        pred = net(net.get_embeds(zt).float(), t_in, y2, None, keep2)
        logits = net.get_logits(pred[masked]).float()
        want = ids2[masked]
        ce = F.cross_entropy(logits, want, reduction="none", label_smoothing=a.label_smoothing)
        n_region = region2.sum(1).clamp(min=1).to(ce.dtype)
        n_masked = masked.sum(1).clamp(min=1).to(ce.dtype)
        summed = per_example(ce, masked)
        if a.mask_weighting == "none":
            weighted = summed / n_masked
        else:
            weighted = mask_weight(rate, a.mask_weighting) * summed / n_region
        B = ids.shape[0]
        # + 0 x the prediction: a batch where nothing happens to be masked still reaches every
        # weight (DDP waits for a gradient of each), with zeros
        terms = {"ce": weighted.view(-1, B).mean(0) + 0.0 * pred.sum()}
        loss = terms["ce"]
        if a.visible_weight > 0:
            # the visible target tokens given back: the path from a token to its output, which the
            # masked positions alone train only through attention
            seen = region2.bool() & ~masked
            back = F.cross_entropy(net.get_logits(pred[seen]).float(), ids2[seen], reduction="none")
            n_seen = seen.sum(1).clamp(min=1).to(back.dtype)
            terms["visible"] = a.visible_weight * (per_example(back, seen) / n_seen).view(-1, B).mean(0)
            loss = loss + terms["visible"]
        if net.cfg.length_head:
            terms["length"] = length_term(net, ids, y, region, tok.pad_id)
            loss = loss + terms["length"]
        terms["loss"] = loss
        if monitor:
            with torch.no_grad():
                plain = F.cross_entropy(logits, want, reduction="none") if a.label_smoothing else ce
                terms["nll"] = (per_example(plain.detach(), masked) / n_masked).view(-1, B).mean(0)
                hit = (logits.argmax(-1) == want).to(ce.dtype)
                terms["acc"] = (per_example(hit, masked) / n_masked).view(-1, B).mean(0)
        return terms

    # ------------------------------------------------------------------ decoding
    def decode(self, pipe, ids, mask, keep, dec, g, progress=None, scored=False):
        """One decoding of a batch cut to its regions: every target position masked, then the
        sampler's steps (masked_samplers.py). Returns the token ids [B, L] and the log-probability
        of each region token [B, L] when it was written (0 elsewhere; the samplers keep it anyway,
        so `scored` changes nothing)."""
        if dec.init != "noise":
            raise ValueError("the masked family writes its target from every position masked (--init noise); "
                             "it has no source start")
        spec = self.samplers[dec.sampler]
        rows = (mask if keep is None else mask * keep).bool()
        predict = TokenPredictor(pipe, mask, keep, rows)
        x = ids.masked_fill(rows, pipe.tokenizer.mask_id)
        out, score = spec.run(predict, x, rows, steps=dec.steps or spec.steps(0), options=dec.options,
                              mask_id=pipe.tokenizer.mask_id, generator=g, progress=progress)
        if dec.options.dedup:
            out, score = dedup(out, score, rows, pipe.tokenizer.pad_id)
        return out, score


class TokenPredictor:
    """The denoiser as the masked samplers see it, for one batch: tokens x [B, L] at masking rate t
    -> log-probabilities [N, V] of the N region positions `rows` [B, L] (row order). [MASK] and
    [CLS] are never predicted. `time_independent`: the model does not see t (trained with
    --time_cond false), so equal inputs give equal outputs and a sampler may reuse them."""

    def __init__(self, pipe, mask, keep, rows):
        self.pipe, self.mask, self.keep, self.rows = pipe, mask, keep, rows
        self.time_independent = not pipe.args.time_cond
        self.banned = [pipe.tokenizer.mask_id, pipe.tokenizer.cls_id]

    def __call__(self, x, t):
        p, model = self.pipe, self.pipe.model
        t_in = torch.full((x.shape[0],), 0.0 if self.time_independent else t * p.args.diffusion_steps,
                          device=x.device)
        dev = x.device.type
        with torch.autocast(dev, dtype=p.dtype or torch.float32, enabled=p.dtype is not None):
            pred = p.net(model.get_embeds(x), t_in, self.mask, None, self.keep)
            logits = model.get_logits(pred[self.rows]).float()
        logits[:, self.banned] = float("-inf")
        return logits.log_softmax(-1)
