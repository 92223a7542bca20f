"""Incremental aggregation of LoRM task deltas across tasks (spec section 7).

At the end of task t the server has, per layer, the merged task delta dW_t = B_t A_t and the summed
(shrunk) Gram G_t of the task's inputs. It keeps S = sum_t dW_t G_t and Gamma = sum_t G_t and deploys
W = W0 + S Gamma^+, i.e. the RegMean merge of the full-rank task deltas (not low rank). Pure tensor state,
float64, no nn.Module and no I/O (state_dict() gives plain tensors for checkpointing).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .regmean import _as64, _check_gram, _check_solver, _right_solve

__all__ = ["TaskAccumulator"]


class TaskAccumulator:
    """Per-layer running sums S (d_out, d_in) and Gamma ((d_in,) diagonal or (d_in, d_in) full), float64.

    Usage at the end of every task: ``acc.add(name, B_t @ A_t, G_t)`` for each layer, then
    ``acc.end_task()``; deploy ``W0 + acc.delta(name)``. The state lives on the device of the first
    delta added for a layer.

    Note (spec section 7.3): for the first task the spec deploys W0 + B_0 A_0 itself; ``delta`` then equals
    B_0 A_0 G_0 G_0^+, which differs from B_0 A_0 only on input directions with no energy (diagonal:
    columns j with g_0[j] == 0 are 0). Choosing between the two is the caller's job.
    """

    def __init__(self) -> None:
        self._S: dict[str, Tensor] = {}
        self._Gamma: dict[str, Tensor] = {}
        self.num_tasks: int = 0

    # -- accumulation ------------------------------------------------------------------------------

    def add(self, name: str, delta_W: Tensor, gram: Tensor) -> None:
        """S += dW G and Gamma += G for layer `name` (spec section 7.2).

        Diagonal gram g (d_in,): S += dW * g (column j scaled by g[j]); full gram: S += dW @ G.
        A layer keeps the gram kind and shapes of its first `add`; mismatches raise ValueError.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if not isinstance(delta_W, Tensor) or delta_W.ndim != 2 or not delta_W.is_floating_point():
            got = (tuple(delta_W.shape), delta_W.dtype) if isinstance(delta_W, Tensor) else type(delta_W).__name__
            raise ValueError(f"delta_W ({name}): expected a floating 2-D (d_out, d_in) tensor, got {got}")
        diag = _check_gram(gram, delta_W.shape[1], f"gram ({name})")
        if name in self._S:
            S, Gamma = self._S[name], self._Gamma[name]
            if S.shape != delta_W.shape:
                raise ValueError(
                    f"delta_W ({name}): shape {tuple(delta_W.shape)} differs from the accumulated {tuple(S.shape)}"
                )
            if (Gamma.ndim == 1) != diag:
                kinds = ("full", "diagonal")
                raise ValueError(
                    f"gram ({name}): {kinds[diag]} gram given but the layer accumulates {kinds[Gamma.ndim == 1]} grams"
                )
            device = S.device
        else:
            device = delta_W.device
        dW64, g64 = _as64(delta_W, device), _as64(gram, device)
        if not bool(torch.isfinite(g64).all()):
            raise ValueError(f"gram ({name}): contains non-finite values")
        if name in self._S:
            if diag:
                self._S[name].addcmul_(dW64, g64)  # column j scaled by g[j]
            else:
                self._S[name].addmm_(dW64, g64)
            self._Gamma[name].add_(g64)
        else:
            self._S[name] = dW64 * g64 if diag else dW64 @ g64
            self._Gamma[name] = g64.clone()

    def end_task(self) -> None:
        """Count one finished task (bookkeeping only; the sums are updated by `add`)."""
        self.num_tasks += 1

    # -- deployment --------------------------------------------------------------------------------

    def delta(self, name: str, *, solver: str = "pinv", dtype: torch.dtype = torch.float32) -> Tensor:
        """Deployed delta S Gamma^+ for layer `name` (spec section 7.3), cast to `dtype` (float32).

        Diagonal: column j is S[:, j] / Gamma[j] = sum_t dW_t[:, j] g_t[j] / sum_t g_t[j] (per input feature,
        an energy-weighted average of the task deltas), 0 where Gamma[j] == 0. Full: the RegMean merge of
        the task deltas. solver "solve" uses the Cholesky solve with pinv fallback of regmean_merge.
        """
        _check_solver(solver)
        if name not in self._S:
            raise KeyError(f"TaskAccumulator: no layer named {name!r} (known: {self.names()})")
        out = _right_solve(self._S[name], self._Gamma[name], solver=solver, caller="TaskAccumulator.delta")
        return out.to(dtype)

    def names(self) -> list[str]:
        """Layer names in the order they were first added."""
        return list(self._S)

    def is_diagonal(self, name: str) -> bool:
        return self._Gamma[name].ndim == 1

    def __contains__(self, name: object) -> bool:
        return name in self._S

    def __len__(self) -> int:
        return len(self._S)

    # -- checkpointing -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Flat dict of tensors: "num_tasks" (0-d int64), "S.<name>", "Gamma.<name>" (float64, not copied)."""
        state: dict[str, Tensor] = {"num_tasks": torch.tensor(self.num_tasks, dtype=torch.int64)}
        for name in self._S:
            state[f"S.{name}"] = self._S[name]
            state[f"Gamma.{name}"] = self._Gamma[name]
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Replace the whole state by (a copy of) `state` as produced by `state_dict`; ValueError if malformed."""
        if "num_tasks" not in state:
            raise ValueError("state: missing key 'num_tasks'")
        S: dict[str, Tensor] = {}
        Gamma: dict[str, Tensor] = {}
        for key, value in state.items():
            if key == "num_tasks":
                continue
            prefix, _, name = key.partition(".")
            if prefix not in ("S", "Gamma") or not name:
                raise ValueError(f"state: unexpected key {key!r} (expected 'num_tasks', 'S.<name>', 'Gamma.<name>')")
            if not isinstance(value, Tensor):
                raise ValueError(f"state[{key!r}]: expected a tensor, got {type(value).__name__}")
            (S if prefix == "S" else Gamma)[name] = value.detach().to(torch.float64).clone()
        if S.keys() != Gamma.keys():
            raise ValueError(f"state: layers with S but no Gamma or vice versa: {sorted(S.keys() ^ Gamma.keys())}")
        for name in S:
            if S[name].ndim != 2:
                raise ValueError(f"state['S.{name}']: expected 2-D, got shape {tuple(S[name].shape)}")
            _check_gram(Gamma[name], S[name].shape[1], f"state['Gamma.{name}']")
        self._S, self._Gamma = S, Gamma
        self.num_tasks = int(state["num_tasks"])
