"""Optimisation: AdamW with decay on the matrices only, the learning-rate schedule, the
exponential moving average of the weights, and the autocast precision."""
import torch


def autocast_dtype(precision, device):
    """The autocast dtype of --precision on `device` (None: fp32, no autocast)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def allow_tf32(precision):
    """--precision tf32: fp32 weights and activations, matrix products in TF32 on GPUs that have it
    (what PyTorch 1.7-1.11 did by default, so what the original DiffuSeq ran on A100s); a no-op
    on CPU."""
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def lr_at(step, args):
    """Linear warm-up to args.lr, then linear decay to 0 at learning_steps (or, with
    --lr_schedule constant, args.lr to the end)."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.lr_schedule == "constant":
        return args.lr
    left = args.learning_steps - step
    return args.lr * max(0.0, left / max(1, args.learning_steps - args.warmup_steps))


def build_optimizer(model, args, device):
    """AdamW over the model's parameters: weight decay on the matrices, not on biases, norms or
    embeddings; one fused kernel for the whole update where the device has it."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in n else decay).append(p)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.999), fused=fused or None)


class EMA:
    """Exponential moving average of parameters, kept in fp32. The parameters named in `live` are
    averaged too, but the weights it hands out (state_dict) hold their live values: the
    original's EMA files keep the live word embedding (--ema_embedding live). Their averages
    travel separately (shadow_of / load_shadow), so a resumed run continues them."""

    def __init__(self, params, rate, live=()):
        self.params = list(params)
        self.rate = rate
        self.live = set(live)
        self.shadow = [p.detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self):
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - self.rate)

    def state_dict(self, model):
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        names = [n for n, _ in model.named_parameters()]
        for n, s in zip(names, self.shadow):
            if n not in self.live:
                sd[n] = s.to(sd[n].dtype).clone()
        return sd

    def load_state_dict(self, model, sd):
        names = [n for n, _ in model.named_parameters()]
        for n, s in zip(names, self.shadow):
            if n not in self.live:
                s.copy_(sd[n])

    def shadow_of(self, model):
        """The averages of the `live` parameters, which state_dict leaves out."""
        names = [n for n, _ in model.named_parameters()]
        return {n: s.clone() for n, s in zip(names, self.shadow) if n in self.live}

    def load_shadow(self, model, averages):
        names = [n for n, _ in model.named_parameters()]
        for n, s in zip(names, self.shadow):
            if n in averages:
                s.copy_(averages[n])


def ema_live_names(args):
    """The parameters whose EMA weights stay live under --ema_embedding."""
    return ("word_embedding.weight",) if getattr(args, "ema_embedding", "ema") == "live" else ()
