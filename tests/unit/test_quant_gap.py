"""bench/quant_gap.py's stand-ins for the hub's weights stay inside each weight's quantization cell."""

import torch

from bench.quant_gap import cell_noise


def test_q4_1_noise_is_within_half_a_step_and_spares_the_stored_extremes():
    g = torch.Generator().manual_seed(0)
    q = torch.stack([torch.randperm(16, generator=g)[:16].repeat(2) for _ in range(6)]).float()  # 6 blocks of 32
    d = torch.tensor([0.01, 0.02, 0.5, 0.001, 0.03, 0.2])[:, None]
    weight = (-0.3 + d * q).reshape(2, 96)  # [out 2, in 96]: 3 blocks per row
    noise = cell_noise(weight, 32, 15, torch.Generator().manual_seed(1)).reshape(6, 32)
    assert (noise.abs() <= d / 2 + 1e-7).all()
    extremes = (q == 0) | (q == 15)
    assert (noise[extremes] == 0).all() and (noise[~extremes] != 0).all()
    assert noise[~extremes].abs().max() > 0.4 * d.max()  # the whole cell, not a sliver of it


def test_q8_0_noise_scales_with_each_blocks_absmax():
    weight = torch.cat([torch.linspace(-1.27, 1.27, 32), torch.linspace(-0.0127, 0.0127, 32)])[None]
    noise = cell_noise(weight, 32, 0, torch.Generator().manual_seed(0))[0]
    assert noise[:32].abs().max() <= 0.005 and noise[:32].abs().max() > 0.002  # d = 1.27 / 127 = 0.01
    assert noise[32:].abs().max() <= 0.00005
