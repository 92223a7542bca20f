"""The interface every method implements, and the mechanics shared by the federated LoRA methods.

The simulator (lorm.federated.simulator) drives a method through tasks and rounds:

    begin_task(t)
    for each round:  state = broadcast(t, r);  uploads = [client_update(k, t, r, state) for k];  aggregate(t, r, uploads)
    end_task(t);  deploy()  -> evaluation

A federated LoRA method only decides *which factors train in a round* (``phase``), *how the server merges them*
(``merge_factors``, ``merge_head``) and *what the model deployed after a task is* (``end_task`` / ``deployed_delta``).
"""

from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass, field
import time

import torch

from lorm.data.tensors import EncodedSplit
from lorm.federated.comm import CommLedger
from lorm.federated.training import Runtime, generator, train_local
from lorm.merging import fedavg
from lorm.models.lora import get_factors, lora_layers, set_factors, set_trainable


class Timers:
    """Accumulated wall time per phase (train, statistics, merge, evaluation)."""

    def __init__(self):
        self.seconds: dict[str, float] = {"train": 0.0, "statistics": 0.0, "merge": 0.0, "evaluation": 0.0}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class RunContext:
    """Everything a method needs; built once per run by the simulator."""

    model: torch.nn.Module
    train: EncodedSplit
    cfg: dict  # resolved config with the method's overrides applied
    runtime: Runtime
    seed: int
    task_ranges: list[tuple[int, int]]  # model output indices [lo, hi) of each task
    client_indices: list[list[list[int]]]  # [task][client] -> train row indices
    ledger: CommLedger = field(default_factory=CommLedger)
    timers: Timers = field(default_factory=Timers)


class Method(abc.ABC):
    name: str = ""
    federated: bool = True
    uses_lora: bool = True  # False: the model is built without the default LoRA layers (full fine-tuning, or
    #                         a method that places its own adapters in __init__, e.g. PILoRA)

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.model = ctx.model
        self.layers = lora_layers(ctx.model)

    @abc.abstractmethod
    def begin_task(self, task: int) -> None: ...

    @abc.abstractmethod
    def broadcast(self, task: int, rnd: int) -> dict: ...

    @abc.abstractmethod
    def client_update(self, client: int, task: int, rnd: int, state: dict) -> dict: ...

    @abc.abstractmethod
    def aggregate(self, task: int, rnd: int, uploads: list[dict]) -> None: ...

    def end_task(self, task: int) -> None:
        """Server work after the task's last round (e.g. LoRM's across-task merge)."""

    @abc.abstractmethod
    def deploy(self) -> None:
        """Put the model in the state that is evaluated after the current task."""

    def state_dict(self) -> dict:
        """Server state that must survive a restart between tasks (checkpointing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FederatedLoRA(Method):
    """LoRA factors + head trained on clients; subclasses choose phases and merges."""

    a_init = "kaiming"  # factor initialisation at the start of every task (spec section 5)
    b_init = "zeros"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.factors: dict[str, dict[str, torch.Tensor]] = {}
        # the global head, carried across tasks (rows of future classes keep their initial values)
        self.head = {k: v.detach().clone() for k, v in self.model.head.state_dict().items()}
        self.optim = ctx.cfg["optim"]

    # ---- what subclasses decide -------------------------------------------------------------------
    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        """The factors trained in this round: ("B",), ("A",) or ("A", "B")."""
        return ("A", "B")

    def merge_factors(self, task: int, rnd: int, phase: tuple[str, ...], uploads: list[dict]) -> None:
        """Default: sample-weighted FedAvg of every uploaded factor."""
        weights = [u["num_samples"] for u in uploads]
        for name in self.layers:
            for f in phase:
                self.factors[name][f] = fedavg([u["factors"][name][f] for u in uploads], weights)

    def merge_head(self, uploads: list[dict]) -> None:
        weights = [u["num_samples"] for u in uploads]
        self.head = {k: fedavg([u["head"][k] for u in uploads], weights) for k in ("weight", "bias")}

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        """Extra upload computed after local training (LoRM: input statistics)."""
        return {}

    # ---- shared mechanics -----------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        gen = generator(self.ctx.seed, 1, task)  # fresh factors per task, drawn on the server and broadcast
        for layer in self.layers.values():
            layer.reset_lora(gen, a_init=self.a_init, b_init=self.b_init)
        self.factors = get_factors(self.model)

    def broadcast(self, task: int, rnd: int) -> dict:
        return {"factors": self.factors, "head": self.head}

    def state_dict(self) -> dict:
        return {"factors": self.factors, "head": self.head}

    def load_state_dict(self, state: dict) -> None:
        self.factors, self.head = state["factors"], state["head"]

    def load_state(self, state: dict) -> None:
        """Client side: start from the server's factors and head, without any deployed delta."""
        for layer in self.layers.values():
            layer.set_delta(None)
        set_factors(self.model, state["factors"])
        with torch.no_grad():
            self.model.head.weight.copy_(state["head"]["weight"])
            self.model.head.bias.copy_(state["head"]["bias"])

    def factor_lr(self, factor: str) -> float:
        specific = self.optim.get(f"lr_{factor}")
        return specific if specific is not None else self.optim["lr"]

    def client_update(self, client: int, task: int, rnd: int, state: dict) -> dict:
        self.load_state(state)
        phase = self.phase(task, rnd)
        set_trainable(self.model, A="A" in phase, B="B" in phase)
        self.model.head.requires_grad_(True)
        groups = [
            {"params": [getattr(layer, f"lora_{f}") for layer in self.layers.values()], "lr": self.factor_lr(f)}
            for f in phase
        ]
        groups.append({"params": list(self.model.head.parameters()), "lr": self.optim["lr"]})
        indices = self.ctx.client_indices[task][client]
        fcil = self.ctx.cfg["fcil"]
        with self.ctx.timers("train"):
            train_local(
                self.model, self.ctx.train, indices, groups,
                epochs=fcil["local_epochs"], class_range=self.ctx.task_ranges[task], runtime=self.ctx.runtime,
                gen=generator(self.ctx.seed, 2, task, rnd, client), weight_decay=self.optim["weight_decay"],
            )
        upload = {
            "factors": {n: {f: getattr(l, f"lora_{f}").detach().clone() for f in phase} for n, l in self.layers.items()},
            "head": {k: v.detach().clone() for k, v in self.model.head.state_dict().items()},
            "num_samples": len(indices),
        }
        with self.ctx.timers("statistics"):
            upload.update(self.client_statistics(client, task, rnd, indices))
        return upload

    def aggregate(self, task: int, rnd: int, uploads: list[dict]) -> None:
        with self.ctx.timers("merge"):
            self.merge_factors(task, rnd, self.phase(task, rnd), uploads)
            self.merge_head(uploads)

    def set_deployed(self, deltas: dict[str, torch.Tensor]) -> None:
        """Evaluate W0 + delta per layer (factors zeroed, so the LoRA path adds nothing) with the merged head."""
        zero = {n: {"A": torch.zeros_like(f["A"]), "B": torch.zeros_like(f["B"])} for n, f in self.factors.items()}
        set_factors(self.model, zero)
        for name, layer in self.layers.items():
            layer.set_delta(deltas[name].to(layer.base.weight.dtype))
        with torch.no_grad():
            self.model.head.weight.copy_(self.head["weight"])
            self.model.head.bias.copy_(self.head["bias"])

    def finished_task_update(self) -> dict[str, torch.Tensor]:
        """The current task's merged update per layer (float64): what the task adds to the cross-task model, and
        the undiluted model W0 + update of the run's diagnostics."""
        return {name: self.task_delta(name) for name in self.layers}

    def task_delta(self, name: str) -> torch.Tensor:
        """The merged update B A of the current task for one layer, as a float64 product."""
        f = self.factors[name]
        return f["B"].double() @ f["A"].double()


class MeanOfTaskDeltas:
    """Cross-task model of the FedAvg-LoRA family: the simple mean of the merged task deltas (spec section 13)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, deltas: dict[str, torch.Tensor]) -> None:
        for name, d in deltas.items():
            self.sums[name] = self.sums[name] + d.double() if name in self.sums else d.double().clone()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        return {name: (s / self.count).float() for name, s in self.sums.items()}

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])
