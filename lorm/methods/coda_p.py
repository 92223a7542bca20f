"""CODA-Prompt (Smith et al., CVPR 2023) as run by fed-mammoth (baselines2-spec section 4), on the frozen backbone
through lorm.models.prompting.PromptedEncoder (prefix-tuning).

Model (4.1, 4.4). Every prompted layer e (``coda.layers``, default 0-4) has M components (``coda.pool_size``):
prompts P (M, L, d), keys K (M, d) and attention vectors A (M, d). Task t owns the components [s, f) =
[t·pt, (t+1)·pt), pt = M // T. With q(x) the frozen, unprompted backbone's pooled feature, the weights are
α_m = cos(q ⊙ A_m, K_m) for m < f (no softmax) and the layer's prompt p(x) = Σ_{m<f} α_m P_m (L, d): rows 0..L/2−1
are prepended to the keys, rows L/2..L−1 to the values of the layer's self-attention. Components [0, s) enter
detached (trained by earlier tasks, frozen), components ≥ f are unused (zero). The head reads the prompted
backbone's own feature (ViT CLS token, MiniLM masked mean).

Task start (4.1). The server draws components [s, f) of K, A and the flattened P of every layer as Gaussian vectors
(generator seeded by run seed, task, layer and tensor), orthogonalised against the span of [0, s) and each other,
unit norm (:func:`orthonormal_extension`; exact orthogonality to the trained old components, where the official
projection onto the non-orthogonal old vectors is approximate).

Loss (Q24). Masked cross-entropy + μ·Σ_e Σ_{X ∈ K, A, P} mean((X Xᵀ − I)²) over the components [0, f), μ =
``coda.ortho_mu`` (0.1, the original code; 0 = fed-mammoth, which drops the term). AdamW, lr ``coda.lr``, weight
decay 0, over the pools and the head.

Communication (spec section 8, lean). The masked loss and the detached old components leave every tensor but the
current components [s, f) and the head rows of the task's classes unchanged on a client (weight decay is 0), so a
client uploads exactly those slices (+ its sample count) and the server FedAvgs them (n_k-weighted) into its global
tensors. A stateless client downloads what its forward and loss read: components [0, f) of every layer and the
head rows of the current classes (the other logits are masked out of the loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorm.federated.training import generator
from lorm.merging import fedavg
from lorm.methods.full import FederatedFull, RunContext
from lorm.models.prompting import PromptedEncoder

CODA_INIT_STREAM = 42  # generator stream of the task-start components (other methods use 0-31, L2P 41)
TENSORS = ("P", "K", "A")


def orthonormal_extension(old: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` unit vectors (count, D), Gaussian draws made orthogonal to the rows of ``old`` (s, D; any norms,
    possibly rank-deficient) and to each other by Gram–Schmidt in float64 (two passes for round-off)."""
    dim = old.shape[1]
    basis = old.new_zeros(0, dim, dtype=torch.float64)
    if old.shape[0]:
        u, sv, vh = torch.linalg.svd(old.double(), full_matrices=False)
        basis = vh[sv > sv.max() * dim * torch.finfo(torch.float64).eps]  # orthonormal rows spanning the old ones
    if basis.shape[0] + count > dim:
        raise ValueError(f"coda: {count} new components orthogonal to {basis.shape[0]} old ones do not fit in "
                         f"{dim} dimensions (lower coda.pool_size)")
    new = []
    for _ in range(count):
        v = torch.randn(dim, generator=gen, dtype=torch.float64)
        for _ in range(2):
            v = v - basis.T @ (basis @ v)
        v = v / v.norm()
        basis = torch.cat((basis, v.unsqueeze(0)))
        new.append(v)
    return torch.stack(new) if new else old.new_zeros(0, dim, dtype=torch.float64)


def ortho_penalty(x: torch.Tensor) -> torch.Tensor:
    """mean((X Xᵀ − I)²) of the rows of X (flattened to 2-d), in fp32 also under autocast."""
    x = x.reshape(x.shape[0], -1).float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        return ((x @ x.T - torch.eye(x.shape[0], device=x.device)) ** 2).mean()


class CodaLayerPool(nn.Module):
    """One prompted layer's components: P (M, L, d), K (M, d), A (M, d), zero until a task initialises them."""

    def __init__(self, pool_size: int, length: int, dim: int):
        super().__init__()
        self.P = nn.Parameter(torch.zeros(pool_size, length, dim))
        self.K = nn.Parameter(torch.zeros(pool_size, dim))
        self.A = nn.Parameter(torch.zeros(pool_size, dim))

    def components(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """P, K, A over [0, end) with [0, start) detached (frozen old components)."""
        return {n: torch.cat((t[:start].detach(), t[start:end])) for n, t in (("P", self.P), ("K", self.K),
                                                                             ("A", self.A))}

    def prompt(self, query: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """p(x) = Σ_{m<end} cos(q ⊙ A_m, K_m) P_m, (B, L, d)."""
        c = self.components(start, end)
        weighted = F.normalize(query.unsqueeze(1) * c["A"].unsqueeze(0), dim=-1)  # (B, f, d)
        alpha = (weighted * F.normalize(c["K"], dim=-1).unsqueeze(0)).sum(-1)  # (B, f)
        return torch.einsum("bm,mld->bld", alpha, c["P"])


class CodaPromptPool(nn.Module):
    """The component pools of the prompted layers; ``forward(query)`` -> {layer: (key prefix, value prefix)}.
    ``start``, ``end`` = the current task's components [s, f) (set by the method)."""

    def __init__(self, layers: list[int], pool_size: int, length: int, dim: int):
        super().__init__()
        self.layers = [int(layer) for layer in layers]
        self.pools = nn.ModuleDict({str(layer): CodaLayerPool(pool_size, length, dim) for layer in self.layers})
        self.length = length
        self.start, self.end = 0, 0

    def forward(self, query: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        if self.end == 0:
            raise RuntimeError("CodaPromptPool: no task set (start, end)")
        half = self.length // 2
        prefixes = {}
        for layer in self.layers:
            p = self.pools[str(layer)].prompt(query, self.start, self.end)
            prefixes[layer] = (p[:, :half], p[:, half:])
        return prefixes

    def penalty(self) -> torch.Tensor:
        """Σ_layers Σ_{P, K, A} mean((X Xᵀ − I)²) over the components [0, end), gradient to [start, end) only."""
        return sum(ortho_penalty(t) for pool in self.pools.values()
                   for t in pool.components(self.start, self.end).values())


class CODAP(FederatedFull):
    name = "coda-p"
    uses_lora = False

    def __init__(self, ctx: RunContext):
        self.cfg = ctx.cfg["coda"]
        num_tasks = len(ctx.task_ranges)
        self.per_task = self.cfg["pool_size"] // num_tasks
        if self.per_task == 0:
            raise ValueError(f"config key coda.pool_size: {self.cfg['pool_size']} components cannot be shared by "
                             f"{num_tasks} tasks")
        if self.cfg["prompt_length"] % 2:
            raise ValueError(f"config key coda.prompt_length: {self.cfg['prompt_length']} must be even (half key, "
                             f"half value prefix)")
        super().__init__(ctx)
        self.lr = self.cfg["lr"]
        self.weight_decay = 0.0  # official wd_reg 0; also what makes the sliced exchange lossless

    @property
    def pool(self) -> CodaPromptPool:
        return self.model.encoder.prompt

    def attach_modules(self) -> None:
        cfg = self.cfg
        pool = CodaPromptPool(cfg["layers"], cfg["pool_size"], cfg["prompt_length"], self.model.head.in_features)
        encoder = PromptedEncoder(self.model.encoder, pool)
        for layer in pool.layers:
            try:
                encoder.attention_module(layer)
            except ValueError as exc:
                raise ValueError(f"config key coda.layers: {exc}") from None
        self.model.encoder = encoder

    def trainable(self, name: str) -> bool:
        return name.startswith(("encoder.prompt.", "head."))

    # ---- which slice of a tensor is exchanged -----------------------------------------------------------
    def components(self, task: int) -> tuple[int, int]:
        return task * self.per_task, (task + 1) * self.per_task

    def download_slice(self, name: str, task: int) -> slice:
        if name.startswith("head."):
            return slice(*self.ctx.task_ranges[task])
        return slice(0, self.components(task)[1])

    def upload_slice(self, name: str, task: int) -> slice:
        if name.startswith("head."):
            return slice(*self.ctx.task_ranges[task])
        return slice(*self.components(task))

    # ---- server -------------------------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        """Draw the task's components [s, f) of every layer's P, K, A (orthonormal, orthogonal to [0, s))."""
        start, end = self.components(task)
        self.pool.start, self.pool.end = start, end
        with torch.no_grad():
            for layer in self.pool.layers:
                for index, tensor in enumerate(TENSORS):
                    name = f"encoder.prompt.pools.{layer}.{tensor}"
                    current = self.global_params[name]
                    flat = current.view(current.shape[0], -1)  # a view: writes go to the global tensor
                    gen = generator(self.ctx.seed, CODA_INIT_STREAM, task, layer, index)
                    new = orthonormal_extension(flat[:start].cpu(), end - start, gen)
                    flat[start:end] = new.to(device=flat.device, dtype=flat.dtype)

    def broadcast(self, task: int, rnd: int) -> dict:
        return {"params": {n: p[self.download_slice(n, task)] for n, p in self.global_params.items()}}

    def merge(self, task: int, rnd: int, uploads: list[dict]) -> dict[str, torch.Tensor]:
        weights = self.model_weights(uploads)
        merged = {}
        for n, p in self.global_params.items():
            merged[n] = p.clone()
            merged[n][self.upload_slice(n, task)] = fedavg([u["params"][n] for u in uploads], weights).to(p.dtype)
        return merged

    def deploy(self) -> None:
        self.load_global()

    # ---- client -------------------------------------------------------------------------------------------
    def receive(self, task: int, state: dict) -> None:
        with torch.no_grad():
            for n, t in state["params"].items():
                self.params[n][self.download_slice(n, task)].copy_(t)

    def send(self, task: int) -> dict[str, torch.Tensor]:
        return {n: p[self.upload_slice(n, task)].detach().clone() for n, p in self.params.items()}

    def regulariser(self, task: int, rnd: int):
        mu = self.cfg["ortho_mu"]
        if mu == 0:  # fed-mammoth (Q24): no orthogonality term
            return None
        return lambda **_: mu * self.pool.penalty()


__all__ = ["CODAP", "CodaLayerPool", "CodaPromptPool", "orthonormal_extension", "ortho_penalty"]
