"""The trained denoiser wrapped once into what the samplers call: `denoise(z, t) -> z0_hat` and
`clamp(z0) -> z0` (rounding to word embeddings), for one batch. The samplers never see the
network, its mask, its noise floor or its self-conditioning."""
import torch


def nearest_embedding(z, emb):
    """Replace each vector of z [..., D] by its nearest row of emb [V, D] in L2 distance.

    |z - e|^2 = |z|^2 - 2 z.e + |e|^2, and |z|^2 does not change the argmin: one matmul.
    """
    flat = z.reshape(-1, z.shape[-1])
    d = emb.pow(2).sum(-1)[None, :] - 2 * flat @ emb.t()
    return emb[d.argmin(-1)].view_as(z)


class Denoise:
    """(z, t) -> predicted z_0 for one batch: the net with the batch's target mask and region,
    the time input raised to the run's noise floor t_min, autocast to `dtype`, and, for a
    self-conditioned model, each call fed the previous call's prediction. With the model's
    `logits` (z [..., D] -> vocabulary logits), `confidence` gives how sure it is of each token."""

    def __init__(self, net, mask, keep=None, t_min=0, self_cond=False, dtype=None, copy=False, logits=None):
        self.net, self.mask, self.keep, self.logits = net, mask, keep, logits
        self.t_min, self.self_cond, self.dtype, self.copy = float(t_min), self_cond, dtype, copy
        self.prev = None

    def __call__(self, z, t):
        with torch.autocast(z.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            z0 = self.net(z, t.clamp(min=self.t_min), self.mask, self.prev, self.keep)
        # a compiled net replays CUDA graphs whose output buffer the next call overwrites, and the
        # solver keeps earlier predictions: take a copy (.float() alone copies only a half output)
        z0 = z0.to(torch.float32, copy=self.copy)
        if self.self_cond:
            self.prev = z0 * self.mask.unsqueeze(-1)
        return z0

    def confidence(self, z0):
        """The probability of the token each vector of z0 [B, L, D] rounds to: [B, L] (0 outside
        the target region, where nothing is read)."""
        region = self.mask.bool() if self.keep is None else self.mask.bool() & self.keep
        out = torch.zeros(region.shape, device=z0.device)
        out[region] = self.logits(z0[region]).float().softmax(-1).amax(-1)
        return out


class Clamp:
    """Rounding of a predicted z_0 to the nearest word embedding, on the rows of `region` only
    (the source is re-imposed after it anyway)."""

    def __init__(self, emb, region):
        self.emb, self.rows = emb, region.bool()

    def __call__(self, z0):
        out = z0.clone()
        out[self.rows] = nearest_embedding(z0[self.rows], self.emb)
        return out
