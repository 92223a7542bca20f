"""Minimal LoRA layers with explicit per-layer state (LoRM conventions).

Conventions (spec §1, §5, Q8):

* ``W = W0 + B A`` with ``A`` of shape (r, d_in) and ``B`` of shape (d_out, r); **no alpha/r scaling**.
* The LoRA path is added at forward time, ``y = base(x) + (x A^T) B^T``; ``W0 + B A`` is never formed
  during training.  Only :func:`fold_lora` materialises the product, once, at deployment.
* An optional full-rank *deployed delta* (e.g. the merged deltas of earlier tasks) can be set with
  :meth:`LoRALinear.set_delta`; the effective weight ``W0 + delta`` is cached once at set time.
* Random initialisation always goes through an explicit :class:`torch.Generator` (CPU) so that results are
  reproducible and independent of the global RNG state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VIT_TARGETS",
    "BERT_TARGETS",
    "LoRALinear",
    "inject_lora",
    "lora_layers",
    "set_trainable",
    "get_factors",
    "set_factors",
    "fold_lora",
]

#: timm VisionTransformer: the fused qkv projection gets ONE LoRA pair (spec §1).
VIT_TARGETS: list[str] = [
    r"blocks\.\d+\.attn\.qkv",
    r"blocks\.\d+\.attn\.proj",
    r"blocks\.\d+\.mlp\.fc1",
    r"blocks\.\d+\.mlp\.fc2",
]

#: Hugging Face ``BertModel`` (e.g. all-MiniLM-L6-v2): the six Linear layers of every encoder layer.
#: Matched with ``re.fullmatch`` so ``pooler.dense`` is excluded and ``attention.output.dense`` and the block
#: ``output.dense`` are distinct patterns.
BERT_TARGETS: list[str] = [
    r"encoder\.layer\.\d+\.attention\.self\.(?:query|key|value)",
    r"encoder\.layer\.\d+\.attention\.output\.dense",
    r"encoder\.layer\.\d+\.intermediate\.dense",
    r"encoder\.layer\.\d+\.output\.dense",
]

_INITS_A = ("kaiming", "zeros")
_INITS_B = ("kaiming", "zeros")


def _kaiming_uniform(shape: tuple[int, int], fan_in: int, generator: torch.Generator | None) -> Tensor:
    """``kaiming_uniform_(a=sqrt(5))``: uniform on (-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn on CPU."""
    bound = 1.0 / math.sqrt(fan_in)
    u = torch.rand(shape, generator=generator, dtype=torch.float32, device="cpu")
    return u.mul_(2.0 * bound).sub_(bound)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank pair ``(A, B)``.

    ``forward(x) = F.linear(x, W_eff, bias) + (x @ A^T) @ B^T`` where ``W_eff = W0`` or, after
    :meth:`set_delta`, ``W0 + delta`` (cached once).  The wrapped layer's weight and bias are frozen.
    """

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(base, LoRALinear):  # pragma: no cover - LoRALinear is not a Linear subclass
            raise TypeError("cannot wrap a LoRALinear twice")
        rank = int(rank)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        # Cached effective weight W0 + delta (None: no deployed delta).  Not persistent: it is derived state.
        self.register_buffer("_w_eff", None, persistent=False)
        self.reset_lora(generator)

    # ------------------------------------------------------------------ properties
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    @property
    def weight(self) -> Tensor:
        """The frozen pre-trained weight W0 (alias of ``base.weight``, for code that inspects ``.weight``,
        e.g. its dtype).  It does NOT include the deployed delta or the LoRA product."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        """The frozen bias (alias of ``base.bias``)."""
        return self.base.bias

    @property
    def has_delta(self) -> bool:
        return self._w_eff is not None

    # ------------------------------------------------------------------ state
    @torch.no_grad()
    def reset_lora(
        self,
        generator: torch.Generator | None = None,
        a_init: str = "kaiming",
        b_init: str = "zeros",
    ) -> None:
        """Re-initialise the factors in place.

        ``"kaiming"``: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = d_in for A and r for B
        (``kaiming_uniform_(a=sqrt(5))``); ``"zeros"``: 0.  Draws come from ``generator`` (a CPU generator;
        ``None`` uses the global RNG) on CPU and are then moved to the parameters' device, A first, then B.
        """
        if a_init not in _INITS_A:
            raise ValueError(f"a_init must be one of {_INITS_A}, got {a_init!r}")
        if b_init not in _INITS_B:
            raise ValueError(f"b_init must be one of {_INITS_B}, got {b_init!r}")
        for param, init, fan_in in (
            (self.lora_A, a_init, self.in_features),
            (self.lora_B, b_init, self.rank),
        ):
            if init == "zeros":
                param.zero_()
            else:
                param.copy_(_kaiming_uniform(tuple(param.shape), fan_in, generator))

    @torch.no_grad()
    def set_delta(self, delta: Tensor | None) -> None:
        """Deploy a full-rank delta: the effective weight becomes ``W0 + delta``.

        The sum is computed once here (in float64, cast to W0's dtype) and cached as a buffer; ``forward``
        uses the cached tensor.  ``None`` removes the delta.  The LoRA path stays active (zero the factors to
        evaluate ``W0 + delta`` alone).  W0 is frozen; if it were modified afterwards the cache would be stale.
        """
        if delta is None:
            self._w_eff = None
            return
        w0 = self.base.weight
        if tuple(delta.shape) != tuple(w0.shape):
            raise ValueError(
                f"delta has shape {tuple(delta.shape)}, expected {tuple(w0.shape)} (d_out, d_in) for this layer"
            )
        w_eff = w0.detach().to(torch.float64) + delta.detach().to(device=w0.device, dtype=torch.float64)
        self._w_eff = w_eff.to(w0.dtype)

    def effective_weight(self) -> Tensor:
        """``W0`` or ``W0 + delta`` (the cached tensor, not a copy); excludes the LoRA product."""
        return self.base.weight if self._w_eff is None else self._w_eff

    def delta_weight(self) -> Tensor:
        """The LoRA product ``B @ A`` (d_out, d_in)."""
        return self.lora_B @ self.lora_A

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self._w_eff is None:
            out = self.base(x)
        else:
            out = F.linear(x, self._w_eff, self.base.bias)
        return out + F.linear(F.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"delta={'yes' if self.has_delta else 'no'}"
        )


# ---------------------------------------------------------------------- model-level helpers
def _split_name(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def _is_inside_lora(name: str, lora_names: Iterable[str]) -> bool:
    return any(name.startswith(ln + ".") for ln in lora_names)


def inject_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int,
    generator: torch.Generator | None = None,
) -> dict[str, LoRALinear]:
    """Replace every ``nn.Linear`` whose qualified name ``re.fullmatch``-es one of ``targets`` by a
    :class:`LoRALinear` (in place).

    Only the wrapped base layers are frozen; other parameters are left as they are.  Factors are initialised
    in ``named_modules`` order (A Kaiming, B zeros) from ``generator``.  Raises ``ValueError`` if a pattern
    matches no Linear layer, or if a matched layer already carries LoRA.  Returns ``{name: layer}`` in
    ``named_modules`` order.
    """
    if isinstance(targets, str):
        targets = [targets]
    patterns = [re.compile(t) for t in targets]
    if not patterns:
        raise ValueError("inject_lora: no target patterns given")

    existing = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    linear_names: list[str] = []
    already: list[str] = []
    for name, module in model.named_modules():
        if _is_inside_lora(name, existing):
            continue  # the base of an existing LoRALinear is never a target
        if isinstance(module, LoRALinear):
            if any(p.fullmatch(name) for p in patterns):
                already.append(name)
            continue
        if isinstance(module, nn.Linear) and name:
            linear_names.append(name)
    if already:
        raise ValueError(f"inject_lora: layers already carry LoRA: {already[:5]}")

    unmatched: list[str] = []
    for pat in patterns:
        if not any(pat.fullmatch(n) for n in linear_names):
            unmatched.append(pat.pattern)
    if unmatched:
        sample = linear_names[:8]
        more = f" ... ({len(linear_names)} in total)" if len(linear_names) > len(sample) else ""
        raise ValueError(
            f"inject_lora: pattern(s) {unmatched} match no nn.Linear module (re.fullmatch on names from "
            f"named_modules()). Available Linear names: {sample}{more}"
        )
    matched = [n for n in linear_names if any(p.fullmatch(n) for p in patterns)]

    out: dict[str, LoRALinear] = {}
    for name in matched:
        parent_name, child = _split_name(name)
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        layer = LoRALinear(base, rank, generator=generator)
        setattr(parent, child, layer)
        out[name] = layer
    return out


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """All :class:`LoRALinear` modules of ``model``, ``{name: layer}`` in ``named_modules`` order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def set_trainable(model: nn.Module, A: bool, B: bool) -> None:
    """Set ``requires_grad`` of every ``lora_A`` / ``lora_B`` factor; other parameters are not touched."""
    for layer in lora_layers(model).values():
        layer.lora_A.requires_grad_(bool(A))
        layer.lora_B.requires_grad_(bool(B))


def get_factors(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """``{name: {"A": A, "B": B}}`` — detached clones (same device and dtype as the parameters)."""
    return {
        n: {"A": m.lora_A.detach().clone(), "B": m.lora_B.detach().clone()} for n, m in lora_layers(model).items()
    }


@torch.no_grad()
def set_factors(
    model: nn.Module,
    factors: Mapping[str, Mapping[str, Tensor]],
    which: Sequence[str] = ("A", "B"),
) -> None:
    """Copy factors into the model in place (no autograd; dtype/device converted by ``copy_``).

    ``factors`` must hold exactly the model's LoRA layer names, each with the keys in ``which``.
    Shapes are checked before anything is written, so a failing call leaves the model unchanged.
    """
    if isinstance(which, str):
        which = (which,)
    bad = [w for w in which if w not in ("A", "B")]
    if bad:
        raise ValueError(f"set_factors: which must contain only 'A' and/or 'B', got {list(which)}")
    layers = lora_layers(model)
    unknown = sorted(set(factors) - set(layers))
    missing = [n for n in layers if n not in factors]
    if unknown or missing:
        raise KeyError(
            f"set_factors: factor names do not match the model's LoRA layers; "
            f"unknown: {unknown[:5]}, missing: {missing[:5]}"
        )
    plan: list[tuple[nn.Parameter, Tensor]] = []
    for name, layer in layers.items():
        entry = factors[name]
        for w in which:
            if w not in entry:
                raise KeyError(f"set_factors: factor {w!r} missing for layer {name!r}")
            src = entry[w]
            dst = layer.lora_A if w == "A" else layer.lora_B
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(
                    f"set_factors: shape mismatch for {name}.{w}: got {tuple(src.shape)}, "
                    f"expected {tuple(dst.shape)}"
                )
            plan.append((dst, src))
    for dst, src in plan:
        dst.copy_(src)


@torch.no_grad()
def _fold_one(layer: LoRALinear) -> nn.Linear:
    base = layer.base
    w = layer.effective_weight()
    folded = w.to(torch.float64) + layer.lora_B.to(torch.float64) @ layer.lora_A.to(torch.float64)
    new = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                    device=w.device, dtype=w.dtype)
    new.weight = nn.Parameter(folded.to(w.dtype), requires_grad=False)
    if base.bias is not None:
        new.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=False)
    new.train(layer.training)
    return new


def fold_lora(model: nn.Module) -> nn.Module:
    """Deploy-time folding: replace every :class:`LoRALinear` by a plain ``nn.Linear`` with weight
    ``W0 (+ delta) + B A`` (computed in float64, cast to W0's dtype) and the original bias (both frozen).

    Works in place and returns ``model``; if ``model`` itself is a LoRALinear the folded Linear is returned.
    """
    if isinstance(model, LoRALinear):
        return _fold_one(model)
    for name, layer in list(lora_layers(model).items()):
        parent_name, child = _split_name(name)
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _fold_one(layer))
    return model
