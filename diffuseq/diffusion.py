"""The forward process and the training loss of DiffuSeq and DiffuSeq-v2.

Shapes: z [B, L, D] sequences of embeddings, mask [B, L] with 1 on the target part y (the only
part that is noised) and 0 on [CLS] x [SEP], t [B] integer timesteps.

The y part is noised toward an absorbing state m: z_t = sqrt(abar_t) (z_0 - m) + m +
sqrt(1 - abar_t) eps. With m = 0 this is DiffuSeq; with a learned m (DiffuSeq-v2's soft absorbing
state) z_T sits around m. Every function takes m as a tensor [D] or None (= 0).
"""
import torch
import torch.nn.functional as F


def _offset(mask, m):
    """m on the y part, 0 on the x part: [B, L, D], or None when there is no absorbing state."""
    if m is None:
        return None
    return mask.unsqueeze(-1).to(m.dtype) * m


def q_mean_std(sched, z0, t, m=None):
    """Mean and standard deviation of q(z_t | z_0) for every position (no x/y split)."""
    mean = sched.at("sqrt_alphas_cumprod", t, z0.ndim) * (z0 if m is None else z0 - m)
    if m is not None:
        mean = mean + m
    return mean, sched.at("sqrt_one_minus_alphas_cumprod", t, z0.ndim)


def q_sample(sched, z0, t, noise, mask, m=None):
    """Sample z_t ~ q(z_t | z_0) on the y part; the x part is z_0 itself, bit for bit."""
    mean, std = q_mean_std(sched, z0, t, m)
    zt = mean + std * noise
    return torch.where(mask.unsqueeze(-1).bool(), zt, z0)


def absorb(z, mask, m, prob, u):
    """Discrete noise: each y token whose uniform draw u [B, L] is below prob ([B] or [B, L]) is
    replaced by the absorbing state m."""
    if prob.ndim == 1:
        prob = prob.unsqueeze(1)
    hit = (u < prob) & mask.bool()
    return torch.where(hit.unsqueeze(-1), m.to(z.dtype).expand_as(z), z)


def masked_mean(x, mask):
    """Mean over the y positions (and the last dim, if any) of each example: [B, L(, D)] -> [B]."""
    w = mask.to(x.dtype)
    if x.ndim == 3:
        return (x * w.unsqueeze(-1)).sum((1, 2)) / (w.sum(1) * x.shape[-1]).clamp(min=1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


def rounding_terms(model, z, ids, mask, accuracy=False):
    """-log p(w | z) through the tied logits, per example, averaged over the positions where mask
    [B, L] is 1, and with accuracy=True the share of those positions whose argmax is w.

    The vocabulary logits are computed for those positions only ([N, V], N = mask.sum(), not
    [B, L, V]): the source and the positions past each target region cost nothing."""
    rows = mask.bool()
    example = rows.nonzero()[:, 0]
    logits = model.get_logits(z[rows]).float()
    want = ids[rows]
    count = rows.sum(1).clamp(min=1).to(logits.dtype)

    def per_example(v):
        return torch.zeros(rows.shape[0], dtype=logits.dtype, device=v.device).index_add_(0, example, v) / count

    nll = per_example(F.cross_entropy(logits, want, reduction="none"))
    if not accuracy:
        return nll
    return nll, per_example((logits.argmax(-1) == want).to(logits.dtype))


def target_region(length, margin, L):
    """Which of L positions each example keeps: [B, L] bool, or None for all of them.

    margin >= 0: an example's target region ends `margin` [PAD]s after its last token (its final
    [SEP]), length [B] tokens in all; training_losses leaves the positions past it out of every
    term and hides them from attention, so an example's loss does not depend on how far its
    batch is padded, and decoding at a predicted length sees what training saw. margin < 0 (or
    length None): every position up to L is target, padding included, as the original trains."""
    if margin is None or margin < 0 or length is None or int(length.min()) + margin >= L:
        return None
    return torch.arange(L, device=length.device)[None, :] < (length + margin)[:, None]


def self_cond_input(model, zt, t, mask, use, keep=None):
    """Self-conditioning in training: for the examples where `use` [B] is true, a first pass
    without gradient gives the estimate of z_0 that the second pass sees (on the y part; zeros
    on x and for the other examples). Returns [B, L, D]."""
    prev = torch.zeros_like(zt)
    if use.any():
        with torch.no_grad():
            est = model(zt[use], t[use], mask[use], None, None if keep is None else keep[use]).float()
        prev[use] = est * mask[use].unsqueeze(-1).to(est.dtype)
    return prev


def target_lengths(ids, mask, pad_id):
    """Number of target tokens of each example, its [SEP] not counted: [B]."""
    return ((ids != pad_id) & mask.bool()).sum(1) - 1


def length_term(model, input_ids, y, counted, pad_id, weight=0.1):
    """weight x the cross-entropy [B] of the length head's prediction from the source (y [B, L], 1
    on the target part) against the number of target tokens where counted [B, L] is 1."""
    want = target_lengths(input_ids, counted, pad_id).clamp(0, model.cfg.seq_len - 1)
    logits = model.length_logits(input_ids, y).float()
    return weight * F.cross_entropy(logits, want, reduction="none")


def training_losses(model, sched, input_ids, input_mask, t, noise, *, denoise_rate=0.0,
                    reg_rate=0.0, u=None, self_cond_u=None, monitor=True, pad_id=0, length_weight=0.1,
                    keep=None, positions="target", m_reg="squared", source_ids=None, from_source=None,
                    anchor=0.0):
    """The DiffuSeq objective for one batch, per example.

    z_0 = Emb(w) + sigma_0 * noise0 (the embedding seen through the first noise level), z_t from
    q(z_t | z_0), and the model predicts z_0. Terms (each a [B] tensor, on the y part only):
      mse          |f(z_t, t) - z_0|^2 (against Emb(w) itself at t = 0),
      tT           |mean of q(z_T | z_0) - m|^2: z_T should reach the prior N(m, I),
      decoder_nll  -log p(w | z_0) through the tied logits (the rounding term),
      reg          reg_rate * |m|^2 / D (learned absorbing state only),
      length       length_weight * cross-entropy of the target length (with a length head),
      anchor       anchor * -log p(w | f(z_t, t)): the rounding term of the model's own prediction
                   (Difformer's anchor loss; anchor > 0 only), which trains the denoiser towards
                   one token's embedding where the mean square error alone settles on an average,
      loss         mse + tT + decoder_nll + reg + length + anchor,
    and, with monitor=True, nll and acc of the tokens rounded from the predicted z_0 (one more
    pass through the vocabulary logits, which costs a small model ~20% of its step: the trainer
    asks for them only on the last steps before each log line).

    The terms are means over the target part, input_mask [B, L]; keep [B, L] (bool, or None =
    all) hides the positions where it is False from attention and from every term, so that
    positions past a target region (see target_region) change nothing.

    positions="all" is the original DiffuSeq's objective: mse, tT and decoder_nll are means over
    every position of the sequence (the source, which the model must give back as it got it, the
    separators and the [PAD]s too), and tT is measured from 0, not from m. m_reg="norm" is its
    regulariser, reg_rate * |m| (the norm, not squared); "squared" is reg_rate * |m|^2 / D.

    noise: [2, B, L, D] standard normal (noise0, eps). u: [B, L] uniform for discrete noise.
    self_cond_u: [B] uniform; with a self-conditioned model, the examples below 0.5 see the
    model's own first estimate of z_0 (the others see zeros, as the first decoding step does).

    source_ids [B, L] and from_source [B] bool (editor training): for the examples where
    from_source is true, z_t is drawn around the embedding of source_ids (the source laid over
    the target part, as a decoding source start lays it) instead of around z_0; the model is
    still asked for z_0, the target's, so it learns to turn a noised source into its target.
    """
    m = getattr(model, "mean_embed", None)
    y = input_mask  # where the target segment lies, as the model sees it (as in decoding)
    if keep is not None:
        input_mask = input_mask * keep  # the positions that count
    emb = model.get_embeds(input_ids).float()
    z0 = emb + sched.at("sqrt_one_minus_alphas_cumprod", torch.zeros_like(t)) * noise[0]
    start = z0
    if from_source is not None and bool(from_source.any()):
        laid = model.get_embeds(source_ids).float() + (z0 - emb)  # the same first noise level
        start = torch.where(from_source.view(-1, 1, 1), laid, z0)
    zt = q_sample(sched, start, t, noise[1], input_mask, m)
    if denoise_rate > 0 and m is not None:
        prob = denoise_rate * sched.tensor("sqrt_one_minus_alphas_cumprod", t.device)[t]
        zt = absorb(zt, input_mask, m, prob, u)
    cfg = getattr(model, "cfg", None)
    prev = None
    if getattr(cfg, "self_cond", False):
        prev = self_cond_input(model, zt, t, y, self_cond_u < 0.5, keep)
    pred = model(zt, t, y, prev, keep).float()

    target = torch.where((t == 0).view(-1, 1, 1), emb, z0)
    t_last = torch.full_like(t, sched.num_steps - 1)
    if positions == "all":
        every = torch.ones_like(input_mask) if keep is None else keep.to(input_mask.dtype)
        mse = masked_mean((pred - target) ** 2, every)
        tT = masked_mean(q_mean_std(sched, z0, t_last)[0] ** 2, every)
        decoder_nll = rounding_terms(model, z0, input_ids, every)
    elif positions == "target":
        mse = masked_mean((pred - target) ** 2, input_mask)
        mean_T, _ = q_mean_std(sched, z0, t_last, m)
        tT = masked_mean((mean_T - (0 if m is None else m)) ** 2, input_mask)
        decoder_nll = rounding_terms(model, z0, input_ids, input_mask)
    else:
        raise ValueError(f"unknown loss positions {positions!r}; choose target or all")
    loss = mse + tT + decoder_nll
    terms = {"mse": mse, "tT": tT, "decoder_nll": decoder_nll}
    if m is not None and reg_rate > 0:
        penalty = m.float().norm() if m_reg == "norm" else m.float().pow(2).mean()
        terms["reg"] = (reg_rate * penalty).expand_as(loss)
        loss = loss + terms["reg"]
    if getattr(cfg, "length_head", False):
        terms["length"] = length_term(model, input_ids, y, input_mask, pad_id, length_weight)
        loss = loss + terms["length"]
    if anchor > 0:
        nll = rounding_terms(model, pred, input_ids, input_mask, accuracy=monitor)
        if monitor:
            nll, acc = nll
            terms["nll"], terms["acc"] = nll.detach(), acc
        terms["anchor"] = anchor * nll
        loss = loss + terms["anchor"]
    terms["loss"] = loss
    if monitor and "nll" not in terms:
        with torch.no_grad():
            terms["nll"], terms["acc"] = rounding_terms(model, pred, input_ids, input_mask, accuracy=True)
    return terms
