"""The prompt-feature probe's two measures (lorm.analysis.prompt_probe), on hand-made features."""

import torch

from lorm.analysis.prompt_probe import linear_probe, mean_pairwise_cosine


def test_mean_pairwise_cosine_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    pairs = [(0, 1), (0, 2), (1, 2)]
    by_hand = sum(float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0)) for i, j in pairs) / 3
    assert abs(mean_pairwise_cosine(x) - by_hand) < 1e-6  # by_hand in float32
    assert abs(mean_pairwise_cosine(torch.ones(5, 3)) - 1.0) < 1e-12


def test_linear_probe_separates_a_small_signal_on_a_large_shared_vector():
    # nearly the same vector for every input (cosine ~ 1), the class in a small offset: standardisation finds it
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(30)
    offsets = torch.eye(4, 8, dtype=torch.float64) * 0.05
    x = 100.0 + offsets[labels] + 0.002 * torch.randn(len(labels), 8, generator=gen, dtype=torch.float64)
    assert mean_pairwise_cosine(x) > 0.999
    assert linear_probe(x[::2], labels[::2], x[1::2], labels[1::2], 4) == 100.0
    # no class signal at all: about chance
    noise = torch.randn(len(labels), 8, generator=gen, dtype=torch.float64)
    assert linear_probe(noise[::2], labels[::2], noise[1::2], labels[1::2], 4) < 60.0
