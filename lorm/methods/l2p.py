"""L2P, Learning to Prompt (Wang et al., CVPR 2022), as run by fed-mammoth (baselines2-spec section 3), on the
frozen backbone through lorm.models.prompting.PromptedEncoder.

Model (3.1, 3.4). A pool of M prompts P_m (L_p tokens each) with one key k_m per prompt, all U(−1, 1) from a
generator seeded by the run seed. The query q(x) is the frozen, unprompted backbone's pooled feature (ViT: final-LN
CLS token; MiniLM: masked mean). Each sample takes the top-N keys by cosine similarity of the l2-normalised q and
k_m; their prompts, in descending-similarity order, give N·L_p tokens inserted after CLS (prompt-tuning). The head
reads the mean of the prompt outputs (``l2p.pool: prompts``, the paper) or of CLS and the prompts
(``cls+prompts``, fed-mammoth, Q22).

Loss (Q20). reduce_sim = Σ_b Σ_{selected m} cos(q_b, k_m) / B is computed in the pool's forward and left on it as
``reduce_sim`` (spec 2.2 item 6); the regulariser returns −λ·reduce_sim, λ = ``l2p.pull_coeff`` (0.1, the PyTorch
reference's value). λ = 0 is fed-mammoth's behaviour: the keys get no gradient and stay at their random init.

Client, server (3.2). Masked cross-entropy on the task's classes + the surrogate, AdamW (lr ``l2p.lr``, weight
decay 0) over prompts, keys and the head; n_k-weighted FedAvg of those three tensors (FederatedFull). Communication
is the lean one of spec section 8 / Q23: the trainable tensors only, both ways.

Not reproduced: fed-mammoth's random frozen ``pos_embed_prompt`` (Q21); prompts always get CLS's pretrained
position embedding (PromptedEncoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorm.federated.training import generator
from lorm.methods.full import FederatedFull, RunContext
from lorm.models.prompting import PromptedEncoder

POOLS = ("prompts", "cls+prompts")
L2P_INIT_STREAM = 41  # generator stream of the pool's initialisation (other methods use 0-31)


class L2PPromptPool(nn.Module):
    """M prompts (M, L_p, d) and keys (M, d), U(−1, 1); ``forward(query)`` -> the (B, N·L_p, d) prompt tokens of
    the top-N keys per sample, most similar first. Leaves ``selected`` (B, N) and ``reduce_sim`` (a scalar with
    gradient to the keys) of the last batch on the module."""

    def __init__(self, dim: int, pool_size: int, prompt_length: int, top_n: int, generator: torch.Generator):
        super().__init__()
        if not 1 <= top_n <= pool_size:
            raise ValueError(f"config key l2p.top_n: {top_n} must be between 1 and l2p.pool_size ({pool_size})")
        self.top_n = top_n
        self.prompts = nn.Parameter(torch.rand(pool_size, prompt_length, dim, generator=generator) * 2 - 1)
        self.keys = nn.Parameter(torch.rand(pool_size, dim, generator=generator) * 2 - 1)
        self.selected: torch.Tensor | None = None
        self.reduce_sim: torch.Tensor | None = None

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """cos(q_b, k_m), (B, M), in fp32 also under autocast (bf16 would make near-ties of the top-N arbitrary)."""
        with torch.autocast(device_type=query.device.type, enabled=False):
            return F.normalize(query.float(), dim=-1) @ F.normalize(self.keys.float(), dim=-1).T

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        best = self.similarity(query).topk(self.top_n, dim=1)  # sorted: descending similarity
        self.selected = best.indices
        self.reduce_sim = best.values.sum() / query.shape[0]
        tokens = self.prompts[best.indices]  # (B, N, L_p, d)
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])


class L2P(FederatedFull):
    name = "l2p"
    uses_lora = False

    def __init__(self, ctx: RunContext):
        self.cfg = ctx.cfg["l2p"]
        if self.cfg["pool"] not in POOLS:
            raise ValueError(f"config key l2p.pool: {self.cfg['pool']!r} is not one of {', '.join(POOLS)}")
        super().__init__(ctx)
        self.lr = self.cfg["lr"]
        self.weight_decay = 0.0  # official wd_reg 0

    @property
    def pool(self) -> L2PPromptPool:
        return self.model.encoder.prompt

    def attach_modules(self) -> None:
        cfg = self.cfg
        pool = L2PPromptPool(self.model.head.in_features, cfg["pool_size"], cfg["prompt_length"], cfg["top_n"],
                             generator(self.ctx.seed, L2P_INIT_STREAM))
        self.model.encoder = PromptedEncoder(self.model.encoder, pool, pooling=cfg["pool"])

    def trainable(self, name: str) -> bool:
        return name.startswith(("encoder.prompt.", "head."))

    def regulariser(self, task: int, rnd: int):
        weight = self.cfg["pull_coeff"]
        if weight == 0:  # fed-mammoth (Q20): the surrogate is never added, the keys get no gradient
            return None
        return lambda **_: -weight * self.pool.reduce_sim


__all__ = ["L2P", "L2PPromptPool"]
