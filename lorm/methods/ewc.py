"""EWC (online): FedAvg + the penalty lambda * sum F (theta - theta*)^2 towards the model after the previous task.

After each task every client computes the diagonal Fisher of the global model on its task data; the server
sums them, divides by the total sample count and keeps F = gamma * F_old + F_task (spec section 13). theta* is
the global model at the end of the previous task, i.e. what clients receive in the task's first round; only F
is downloaded in addition, once per task. The official code does not train in a task's last round (quirk Q11,
``ewc.skip_last_round``)."""

from __future__ import annotations

import torch

from lorm.federated.client_stats import diagonal_fisher
from lorm.methods.full import FederatedFull, RunContext


class EWC(FederatedFull):
    name = "ewc"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        cfg = ctx.cfg["ewc"]
        self.lam, self.gamma, self.skip_last_round = cfg["lambda"], cfg["gamma"], cfg["skip_last_round"]
        self.fisher: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None

    def trains(self, task: int, rnd: int) -> bool:
        return not (self.skip_last_round and rnd == self.ctx.cfg["fcil"]["rounds"] - 1)

    def broadcast(self, task: int, rnd: int) -> dict:
        state = super().broadcast(task, rnd)
        if rnd == 0 and self.fisher is not None:  # clients keep F (and theta* = this round's model) for the task
            state["fisher"] = self.fisher
        return state

    def penalty(self) -> torch.Tensor:
        """lambda * sum F (theta - theta*)^2: its gradient is 2 lambda F (theta - theta*)."""
        total = 0.0
        for n, p in self.params.items():
            total = total + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return self.lam * total

    def regulariser(self, task: int, rnd: int):
        if self.fisher is None:
            return None
        return lambda **_: self.penalty()

    def end_task(self, task: int) -> None:
        ctx = self.ctx
        self.load_global()
        total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        samples = 0
        for client, indices in enumerate(ctx.client_indices[task]):
            ctx.ledger.download({"params": self.global_params}, kind="end_of_task")
            with ctx.timers("statistics"):
                fisher = diagonal_fisher(self.model, ctx.train, indices, self.params, ctx.task_ranges[task],
                                         ctx.runtime)
            ctx.ledger.upload({"fisher": fisher, "num_samples": len(indices)}, kind="end_of_task")
            for n, f in fisher.items():
                total[n] += f
            samples += len(indices)
        with ctx.timers("merge"):
            task_fisher = {n: f / max(samples, 1) for n, f in total.items()}
            if self.fisher is None:
                self.fisher = task_fisher
            else:
                self.fisher = {n: self.gamma * self.fisher[n] + task_fisher[n] for n in task_fisher}
            self.anchor = {n: p.clone() for n, p in self.global_params.items()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher, self.anchor = state["fisher"], state["anchor"]
