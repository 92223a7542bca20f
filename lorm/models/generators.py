"""TARGET's data-free synthesis pieces (baselines2-spec sections 5.2 and 5.4): the generators that map noise to
the backbone's input space, and the re-initialisation of the server's student. Pure model code, no I/O.

- ``ImageGenerator`` (5.2): z -> Linear -> (2·ngf, H/4, H/4) -> two upsample/conv stages -> Sigmoid: images in
  [0, 1], before the dataset's normalisation.
- ``SoftTokenGenerator`` (5.4 option a): z -> per-position MLP -> softmax over the vocabulary -> convex combination
  of the (frozen) word embeddings, with the [CLS] and [SEP] embeddings fixed at the ends: ``inputs_embeds`` that
  stay in the convex hull of real token embeddings (the counterpart of the Sigmoid pixel box).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ImageGenerator(nn.Module):
    """z (B, nz) -> images (B, 3, H, W) in [0, 1]; H must be a multiple of 4."""

    def __init__(self, image_size: int, nz: int = 256, ngf: int = 64, channels: int = 3):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ImageGenerator: image size {image_size} is not a multiple of 4")
        self.init_size = image_size // 4
        self.project = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, self.init_size, self.init_size)
        return self.body(x)


class SoftTokenGenerator(nn.Module):
    """z (B, nz) -> inputs_embeds (B, length, d): [CLS], length − 2 soft tokens, [SEP].

    Each soft token is softmax(logits over the vocabulary) @ E with E the frozen word-embedding matrix (V, d).
    E, [CLS] and [SEP] are plain tensors, not parameters or buffers: the generator's state (and its meta-learning
    fast copy) holds only what trains, and two generators can share one E."""

    def __init__(self, word_embeddings: torch.Tensor, cls_embedding: torch.Tensor, sep_embedding: torch.Tensor,
                 length: int = 16, nz: int = 256, hidden: int = 256):
        super().__init__()
        if length < 3:
            raise ValueError(f"SoftTokenGenerator: length {length} leaves no room between [CLS] and [SEP]")
        self.num_soft = length - 2
        self.hidden = hidden
        self.word_embeddings = word_embeddings.detach()
        self.cls_embedding, self.sep_embedding = cls_embedding.detach(), sep_embedding.detach()
        self.project = nn.Linear(nz, self.num_soft * hidden)
        self.norm1 = nn.BatchNorm1d(hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.norm2 = nn.BatchNorm1d(hidden)
        self.to_vocab = nn.Linear(hidden, word_embeddings.shape[0])
        self.act = nn.LeakyReLU(0.2)

    def token_distribution(self, z: torch.Tensor) -> torch.Tensor:
        """(B, length − 2, V) probabilities over the vocabulary at each soft position."""
        h = self.project(z).view(-1, self.hidden)  # BatchNorm over batch x positions, per hidden unit
        h = self.act(self.norm1(h))
        h = self.act(self.norm2(self.mix(h)))
        return self.to_vocab(h).softmax(-1).view(z.shape[0], self.num_soft, -1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        soft = self.token_distribution(z) @ self.word_embeddings
        ends = [e.to(soft.dtype).expand(z.shape[0], 1, -1) for e in (self.cls_embedding, self.sep_embedding)]
        return torch.cat([ends[0], soft, ends[1]], dim=1)


@torch.no_grad()
def reinitialise_student(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """TARGET's ``weight_init`` in place: Linear and Conv2d weights Xavier-normal, their biases N(0, 1); norms,
    CLS token and position (and word) embeddings keep the teacher's values. Draws come from the CPU ``generator``
    in module order (then copied to the parameters' device), so the result is the same on every device."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fan_out, fan_in = module.weight.shape[0], module.weight[0].numel()
            receptive = module.weight[0, 0].numel()
            std = math.sqrt(2.0 / (fan_in + fan_out * receptive))
            module.weight.copy_(torch.empty(module.weight.shape).normal_(0.0, std, generator=generator))
            if module.bias is not None:
                module.bias.copy_(torch.empty(module.bias.shape).normal_(0.0, 1.0, generator=generator))
    return model
