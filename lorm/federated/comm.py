"""Communication accounting: bytes of the tensors actually exchanged between server and clients."""

from __future__ import annotations

from collections import defaultdict

import torch

SCALAR_BYTES = 8  # a python int/float sent alongside the tensors (e.g. the client's sample count)


def payload_bytes(obj) -> int:
    """Bytes of a (nested) payload: tensors count numel * element size, scalars 8 bytes, None nothing."""
    if obj is None:
        return 0
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    if isinstance(obj, (int, float, bool)):
        return SCALAR_BYTES
    raise TypeError(f"cannot count the bytes of a {type(obj).__name__} payload")


class CommLedger:
    """Per-exchange log of upload/download bytes; 'round' exchanges are the training rounds, other kinds
    (e.g. LoRM's end-of-task statistics exchange) count in the totals only."""

    def __init__(self):
        self.totals = defaultdict(int)  # (direction, kind) -> bytes
        self.client_rounds = 0

    def download(self, payload, kind: str = "round") -> None:
        self.totals[("download", kind)] += payload_bytes(payload)

    def upload(self, payload, kind: str = "round") -> None:
        self.totals[("upload", kind)] += payload_bytes(payload)
        if kind == "round":
            self.client_rounds += 1

    def state_dict(self) -> dict:
        return {"totals": [[d, k, v] for (d, k), v in self.totals.items()], "client_rounds": self.client_rounds}

    def load_state_dict(self, state: dict) -> None:
        self.totals = defaultdict(int, {(d, k): v for d, k, v in state["totals"]})
        self.client_rounds = int(state["client_rounds"])

    def summary(self) -> dict:
        per = max(self.client_rounds, 1)
        up_round = self.totals[("upload", "round")]
        down_round = self.totals[("download", "round")]
        return {
            "upload_bytes_per_client_round": up_round / per if self.client_rounds else 0.0,
            "download_bytes_per_client_round": down_round / per if self.client_rounds else 0.0,
            "upload_bytes_total": sum(v for (d, _), v in self.totals.items() if d == "upload"),
            "download_bytes_total": sum(v for (d, _), v in self.totals.items() if d == "download"),
            "client_rounds": self.client_rounds,
            "by_kind": {f"{d}_{k}": v for (d, k), v in sorted(self.totals.items())},
        }


def pack_symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle (with diagonal) of a symmetric matrix: d(d+1)/2 numbers instead of d^2 on the wire."""
    rows, cols = torch.triu_indices(matrix.shape[0], matrix.shape[1], device=matrix.device)
    return matrix[rows, cols]


def unpack_symmetric(packed: torch.Tensor, dim: int) -> torch.Tensor:
    rows, cols = torch.triu_indices(dim, dim, device=packed.device)
    out = packed.new_zeros(dim, dim)
    out[rows, cols] = packed
    out[cols, rows] = packed
    return out
