"""Resumable runs: a checkpoint after every task holds everything the rest of the run depends on.

Every other random draw is derived from (seed, task, round, client), so the server state of the method, the
metrics so far, the byte ledger and the global torch RNG (dropout) are enough to continue a killed run and end
with exactly the metrics of an uninterrupted one. Optimiser state is not needed: AdamW is fresh every round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("lorm")


def run_fingerprint(cfg: dict, method: str, seed: int, beta: float, partition: dict) -> str:
    """Identity of a run: everything that changes its results (not runtime settings such as threads)."""
    relevant = {k: v for k, v in cfg.items() if k != "runtime"}
    relevant["runtime"] = {k: cfg["runtime"][k] for k in ("device", "amp") if k in cfg["runtime"]}
    blob = json.dumps([relevant, method, int(seed), float(beta), partition], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomic write: a crash while saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this run. One left by a run whose config, method, seed, beta
    or partition have changed since (e.g. a killed job whose params were then edited) is discarded with a
    warning: resuming it would mix two experiments."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: nothing to resume from
        log.warning("checkpoint %s is unreadable (%s); starting from the first task", path, type(exc).__name__)
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to a different run (config, method, seed, beta or partition changed); "
                    "ignoring it and starting from the first task", path)
        return None
    return payload
