"""Input statistics of selected modules via forward pre-hooks (spec §4, Q2).

For every hooked module the inputs are flattened over all leading dimensions to (n, d_in) and accumulated as

* ``"diag"``: ``d[j] = sum_tokens x_j^2``, shape (d_in,) — never builds a d x d matrix;
* ``"full"``: the Gram ``X^T X``, shape (d_in, d_in).

Accumulation is always float32 (fp16/bf16 inputs, e.g. under autocast, are upcast and autocast is disabled
inside the hook).  For text, a token mask (the attention mask) excludes padded positions of 3-D inputs.
2-D inputs are taken as they are: the head's pooled features, and the encoder Linears' inputs under the packed
MiniLM forward (lorm.models.packed_bert), which are (n_tokens, d) matrices of real tokens already.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["InputStatistics", "KINDS"]

KINDS = ("diag", "full")


class InputStatistics:
    """Accumulate input statistics of ``modules`` while the context is active.

    ``modules``: ``{name: module}`` (e.g. the output of ``lora_layers(model)`` plus ``{"head": model.head}``).
    ``kinds``: one kind for all modules, or ``{name: kind}`` covering exactly the names of ``modules``.

    Usage::

        with InputStatistics(mods, kinds) as st:
            for batch in loader:
                st.set_token_mask(batch["attention_mask"])   # text only
                model(...)
        grams = st.results(); counts = st.num_tokens

    Only the float32 accumulators (and the current mask) are kept; no activations are referenced.
    """

    def __init__(self, modules: Mapping[str, nn.Module], kinds: Mapping[str, str] | str = "diag") -> None:
        self.modules: dict[str, nn.Module] = dict(modules)
        if not self.modules:
            raise ValueError("InputStatistics: no modules given")
        if isinstance(kinds, str):
            kinds = {n: kinds for n in self.modules}
        else:
            kinds = dict(kinds)
            unknown = sorted(set(kinds) - set(self.modules))
            missing = [n for n in self.modules if n not in kinds]
            if unknown or missing:
                raise ValueError(
                    f"InputStatistics: kinds must cover exactly the module names; unknown: {unknown[:5]}, "
                    f"missing: {missing[:5]}"
                )
        bad = {n: k for n, k in kinds.items() if k not in KINDS}
        if bad:
            raise ValueError(f"InputStatistics: kind must be one of {KINDS}, got {bad}")
        self.kinds: dict[str, str] = kinds
        self._acc: dict[str, Tensor | None] = {}
        self.num_tokens: dict[str, int] = {}
        self._mask: Tensor | None = None
        self._handles: list = []
        self.reset()

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        """Drop all accumulated statistics and token counts (the token mask is kept)."""
        self._acc = {n: None for n in self.modules}
        self.num_tokens = {n: 0 for n in self.modules}

    def set_token_mask(self, mask: Tensor | None) -> None:
        """Token mask (batch, seq_len), bool or 0/1, for the next forward passes; ``None`` clears it.

        Applied to hooked inputs of shape (batch, seq_len, d): only positions where the mask is true count.
        Ignored for 2-D inputs (batch, d), e.g. a head on pooled features.
        """
        if mask is None:
            self._mask = None
            return
        if mask.dim() != 2:
            raise ValueError(f"token mask must have shape (batch, seq_len), got {tuple(mask.shape)}")
        self._mask = mask.detach().bool()

    def __enter__(self) -> "InputStatistics":
        if self._handles:
            raise RuntimeError("InputStatistics is already active")
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_pre_hook(self._make_hook(name), with_kwargs=True))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._remove_hooks()
        return False

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Tensor]:
        """``{name: statistic}`` as float32 clones.  A module that saw no input gives zeros if its input width
        is known (``in_features``), otherwise a RuntimeError."""
        out: dict[str, Tensor] = {}
        for name, module in self.modules.items():
            acc = self._acc[name]
            if acc is None:
                d = getattr(module, "in_features", None)
                if d is None:
                    raise RuntimeError(f"InputStatistics: module {name!r} received no input")
                shape = (d,) if self.kinds[name] == "diag" else (d, d)
                out[name] = torch.zeros(shape, dtype=torch.float32)
            else:
                out[name] = acc.clone()
        return out

    # ------------------------------------------------------------------ hook
    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if args:
                x = args[0]
            elif "input" in kwargs:
                x = kwargs["input"]
            elif len(kwargs) == 1:
                x = next(iter(kwargs.values()))
            else:
                raise RuntimeError(f"InputStatistics: cannot find the input tensor of module {name!r}")
            self._accumulate(name, x)
            return None

        return hook

    @torch.no_grad()
    def _accumulate(self, name: str, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise RuntimeError(f"InputStatistics: input of module {name!r} is not a tensor with a feature dim")
        x = x.detach()
        mask = self._mask
        if mask is not None and x.dim() >= 3:
            if x.dim() != 3 or tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(
                    f"InputStatistics: token mask of shape {tuple(mask.shape)} does not match the input of "
                    f"module {name!r} with shape {tuple(x.shape)} (expected (batch, seq_len, d) with mask "
                    f"(batch, seq_len))"
                )
            x = x[mask.to(x.device)]  # (n_valid, d)
        d = x.shape[-1]
        x = x.reshape(-1, d)
        kind = self.kinds[name]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(torch.float32)
            stat = x.pow(2).sum(0) if kind == "diag" else x.T @ x
        acc = self._acc[name]
        if acc is None:
            self._acc[name] = stat
        else:
            if acc.shape != stat.shape:
                raise RuntimeError(
                    f"InputStatistics: input width of module {name!r} changed from {acc.shape[0]} to {d}"
                )
            acc.add_(stat.to(acc.device))
        self.num_tokens[name] += int(x.shape[0])
