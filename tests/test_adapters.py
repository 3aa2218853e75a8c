"""diffuseq/adapters.py: the denoiser as the samplers call it (noise floor, self-conditioning,
mask, region) and the rounding to word embeddings."""
import torch

from diffuseq.adapters import Clamp, Denoise, nearest_embedding


def test_the_time_input_is_raised_to_the_noise_floor():
    seen = []
    net = lambda z, t, mask, prev, keep=None: seen.append(t.clone()) or z  # noqa: E731
    Denoise(net, torch.ones(2, 3), t_min=120)(torch.zeros(2, 3, 4), torch.tensor([5.0, 150.0]))
    assert seen[0].tolist() == [120.0, 150.0]


def test_a_self_conditioned_model_gets_its_last_prediction_on_the_target_only():
    seen = []
    net = lambda z, t, mask, prev, keep=None: seen.append(prev) or z + 1  # noqa: E731
    mask = torch.tensor([[0, 1, 1]])
    denoise = Denoise(net, mask, self_cond=True)
    z = torch.zeros(1, 3, 2)
    denoise(z, torch.tensor([9.0]))
    denoise(z, torch.tensor([8.0]))
    assert seen[0] is None
    assert seen[1].tolist() == [[[0, 0], [1, 1], [1, 1]]]


def test_mask_and_region_reach_the_net_unchanged():
    seen = {}

    def net(z, t, mask, prev, keep=None):
        seen.update(mask=mask, keep=keep)
        return z
    mask, keep = torch.tensor([[0, 1, 1, 1]]), torch.tensor([[True, True, True, False]])
    Denoise(net, mask, keep)(torch.zeros(1, 4, 2), torch.tensor([3.0]))
    assert seen["mask"] is mask and seen["keep"] is keep


def test_clamp_rounds_the_region_rows_only():
    emb = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z0 = torch.tensor([[[9.0, 1.0], [1.0, 8.0], [4.0, 4.0]]])
    out = Clamp(emb, torch.tensor([[1, 1, 0]]))(z0)
    assert out[0, 0].tolist() == [10.0, 0.0] and out[0, 1].tolist() == [0.0, 10.0]
    assert out[0, 2].tolist() == [4.0, 4.0]  # outside the region: untouched
    assert z0[0, 0].tolist() == [9.0, 1.0]  # the input is not modified


def test_nearest_embedding_is_the_argmin_of_the_distance():
    g = torch.Generator().manual_seed(0)
    emb, z = torch.randn(50, 8, generator=g), torch.randn(3, 7, 8, generator=g)
    brute = emb[torch.cdist(z.reshape(-1, 8), emb).argmin(-1)].view_as(z)
    assert torch.equal(nearest_embedding(z, emb), brute)
