"""The random draws of a training or validation step: timesteps, Gaussian noise and the uniforms
of discrete noise and self-conditioning, each a function of (seed, step) alone.

They are drawn for the whole global batch and sliced per process, so N processes train as one,
and at full seq_len and cut, so a shorter padded batch sees the same noise at each position."""
import torch

from . import dist


def step_generator(seed, step, device):
    """The generator every process uses for the global batch's draws at `step`."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    return g


def draw_rows(args, sampler, ids, index=None):
    """(rows drawn, this process's rows) of a batch ids [B, L]: validation (sampler None) draws its
    B rows; training draws the global batch of --bsz, of which index [B] are this process's; with
    --replicated_draws every process draws alike, for the largest share of the batch, and takes its
    first rows."""
    if sampler is None:
        return ids.shape[0], index
    if getattr(args, "replicated_draws", False):
        return -(-args.bsz // dist.world_size()), torch.arange(ids.shape[0], device=ids.device)
    return args.bsz, index


def draw_noise(args, sampler, step, batch, L, device, seed=None):
    """Timesteps [B] and importance weights [B], Gaussian noise [2, B, L, D], uniforms [B, L]
    (discrete noise) and [B] (self-conditioning) of a batch of B at `step` (identical on every
    process). Timesteps lie in [t_min, T): drawn by the timestep sampler over the T - t_min levels
    above the noise floor, or, with sampler None (validation), uniformly with weight 1. seed:
    args.seed unless given (validation draws from its own stream)."""
    seed = args.seed if seed is None else seed
    g_cpu = step_generator(seed, step, "cpu")
    if sampler is None:
        t, w = torch.randint(args.t_min, args.diffusion_steps, (batch,), generator=g_cpu), torch.ones(batch)
    else:
        t, w = sampler.sample(batch, g_cpu)
        t = t + args.t_min
    g = g_cpu if device.type == "cpu" else step_generator(seed, step, device)
    noise = torch.randn(2, batch, args.seq_len, args.hidden_dim, generator=g, device=device)
    u = torch.rand(batch, args.seq_len, generator=g, device=device)
    sc = torch.rand(batch, generator=g, device=device)
    return t.to(device), w.to(device), noise[:, :, :L], u[:, :L], sc


def draw_source(args, step, batch, device, seed=None):
    """Editor training (--source_rate): which of a batch of B at `step` start from their source
    laid over the target part, [B] bool, and the timesteps of those, [B], uniform in
    0..source_t_max (identical on every process; a stream of its own, so the other draws do not
    change when the option is switched on). seed: args.seed unless given, as draw_noise."""
    g = step_generator((args.seed if seed is None else seed) * 31 + 7, step, "cpu")
    use = torch.rand(batch, generator=g) < args.source_rate
    t = torch.randint(0, args.source_t_max + 1, (batch,), generator=g)
    return use.to(device), t.to(device)
