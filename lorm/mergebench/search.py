"""Greedy coordinate ("linear") search of knots-spec 7.3.

Parameters are tuned one at a time, in order; the others keep their current values (the start values until
they are tuned). Each parameter's grid is swept in the given order and the sweep stops at the first value that
does not improve on the best score of that sweep; the best value is fixed and the next parameter follows. The
first value of a sweep is always accepted (it has nothing to beat). Tie rule: ``"ge"`` counts an equal score as
an improvement (the official per-task scripts: the later value wins), ``"gt"`` requires a strict improvement
(the joint script). A coordinate with ``early_stop=False`` (the DARE seed, which has no order) evaluates its
whole grid and keeps the best under the same tie rule.

``score(hp)`` is called with the full hyperparameter dict; callers cache it (the same hp can come back, e.g.
the current value of the next coordinate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["Coordinate", "greedy_search", "improves", "coordinates_for"]


@dataclass(frozen=True)
class Coordinate:
    name: str
    grid: tuple
    early_stop: bool = True


def improves(score: float, best: float | None, tie: str) -> bool:
    if tie not in ("ge", "gt"):
        raise ValueError(f"tie: expected 'ge' or 'gt', got {tie!r}")
    if best is None:
        return True
    return score >= best if tie == "ge" else score > best


def greedy_search(score: Callable[[dict], float], coordinates: Sequence[Coordinate], start: dict, *,
                  tie: str = "ge") -> dict:
    """Returns {"chosen": hp, "score": its score, "steps": [{"param", "value", "hp", "score", "improved",
    "kept"}...]} with one step per evaluated grid value, in evaluation order."""
    current = dict(start)
    steps: list[dict] = []
    best_score = None
    for coord in coordinates:
        if not coord.grid:
            raise ValueError(f"search: empty grid for {coord.name!r}")
        best_value, best_score = None, None
        for value in coord.grid:
            hp = {**current, coord.name: value}
            s = float(score(hp))
            better = improves(s, best_score, tie)
            steps.append({"param": coord.name, "value": value, "hp": hp, "score": s, "improved": better})
            if better:
                best_value, best_score = value, s
            elif coord.early_stop:
                break
        current[coord.name] = best_value
        for step in steps:
            if step["param"] == coord.name:
                step["kept"] = step["value"] == best_value
    return {"chosen": current, "score": best_score, "steps": steps}


def coordinates_for(method: str, merge_cfg: dict) -> list[Coordinate]:
    """The coordinates of a benchmark method: lambda; then topK (TIES variants) or DARE p and the DARE seed."""
    base = method.removeprefix("knots-")
    coords = [Coordinate("lam", tuple(merge_cfg["lambda_grid"]))]
    if base == "ties":
        coords.append(Coordinate("topk", tuple(merge_cfg["topk_grid"])))
    elif base == "dare-ties":
        coords.append(Coordinate("dare_p", tuple(merge_cfg["dare_p_grid"])))
        coords.append(Coordinate("seed", tuple(merge_cfg["dare_seeds"]), early_stop=False))
    elif base != "ta":
        raise ValueError(f"unknown merge method {method!r}")
    return coords


def start_for(method: str, start_cfg: dict, merge_cfg: dict) -> dict:
    """Start values of the parameters the method uses."""
    base = method.removeprefix("knots-")
    hp = {"lam": start_cfg["lam"]}
    if base == "ties":
        hp["topk"] = start_cfg["topk"]
    elif base == "dare-ties":
        hp["dare_p"] = start_cfg["dare_p"]
        hp["seed"] = merge_cfg["dare_seeds"][0]
    return hp
