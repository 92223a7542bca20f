"""Server merges of the model-merging family (TA, TIES, DARE-TIES and their KnOTS versions) as federated
aggregators of the clients' LoRA updates (knots-spec section 11).

Every round the clients start from the task's running update with fresh LoRA factors (the task's A, B = 0),
train both factors and the head, and upload A_c, B_c. The server merges the *products* dW_c = B_c A_c —
never the factors, whose average adds cross terms B_c A_c' (knots-spec section 5) — folds the merged update
into the task's running update (spec 11.2 option (a)) and sends it back:

- KnOTS methods (and TA, which equals KnOTS-TA exactly) send the merged update as the rank-r factor pair
  (U, R_merged), r <= sum of the client ranks: r (O + I) numbers per layer, exact (option (b));
- plain TIES / DARE-TIES on the dense products destroy the low rank (trimming and sign election act entry by
  entry), so they send the dense O x I update.

Across tasks the model is W0 + the mean of the task updates, as for the FedAvg-LoRA family (spec section 13).
Hyperparameters come from the ``task_merge`` section: a single lambda, TIES top-K in percent, DARE p with a
per-round seed derived from the run seed (logged), 'mean' (disjoint mean) or 'sum', and optional client
weighting by sample count (not in the paper; ``task_merge.weighted``).
"""

from __future__ import annotations

import logging

import torch

from lorm.federated.training import derive_seed
from lorm.merging import knots_align, merge_deltas
from lorm.methods.base import RunContext
from lorm.methods.fedavg_lora import FedAvgLoRA
from lorm.models.lora import set_factors

log = logging.getLogger("lorm")


class FederatedTaskMerge(FedAvgLoRA):
    merge_method = "ta"  # the task_merging method applied to the clients' updates
    aligned = True  # KnOTS: merge U^T dW_c in a shared basis; False: merge the dense products

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        cfg = ctx.cfg["task_merge"]
        self.lam, self.merging_type, self.weighted = cfg["lam"], cfg["merging_type"], cfg["weighted"]
        self.topk = cfg["topk"] if self.merge_method == "ties" else None
        self.dare_p = cfg["dare_p"] if self.merge_method in ("dare", "dare-ties") else None
        self.running: dict[str, torch.Tensor] = {}  # the current task's update, summed over its rounds
        self.last_update: dict | None = None  # what the next round's download carries

    def begin_task(self, task: int) -> None:
        super().begin_task(task)  # fresh A (seeded), B = 0
        self.running = {n: torch.zeros_like(layer.base.weight) for n, layer in self.layers.items()}
        self.last_update = None

    def broadcast(self, task: int, rnd: int) -> dict:
        if rnd == 0:  # clients keep the task's A; B restarts at 0 every round, so it is never sent
            return {"A": {n: f["A"] for n, f in self.factors.items()}, "head": self.head}
        return {"update": self.last_update, "head": self.head}

    def load_state(self, state: dict) -> None:
        """Client side: W0 + the task's running update, LoRA restarted (task A, B = 0), the global head."""
        for name, layer in self.layers.items():
            layer.set_delta(self.running[name])
        set_factors(self.model, {n: {"A": f["A"], "B": torch.zeros_like(f["B"])} for n, f in self.factors.items()})
        with torch.no_grad():
            self.model.head.weight.copy_(state["head"]["weight"])
            self.model.head.bias.copy_(state["head"]["bias"])

    def merge_kwargs(self, task: int, rnd: int, uploads: list[dict]) -> dict:
        kw = dict(lam=self.lam, topk=self.topk, dare_p=self.dare_p, merging_type=self.merging_type)
        if self.dare_p is not None:
            kw["seed"] = derive_seed(self.ctx.seed, 9, task, rnd) % (2 ** 31)
            log.debug("task %d round %d: DARE seed %d", task, rnd, kw["seed"])
        if self.weighted:
            kw["weights"] = [u["num_samples"] for u in uploads]
        return kw

    def merge_factors(self, task: int, rnd: int, phase, uploads: list[dict]) -> None:
        kw = self.merge_kwargs(task, rnd, uploads)
        names = list(self.layers)
        factors = {n: ([u["factors"][n]["B"] for u in uploads], [u["factors"][n]["A"] for u in uploads])
                   for n in names}
        if self.aligned:
            bases = {n: knots_align(*factors[n]) for n in names}
            merged_R = merge_deltas([{n: bases[n][1][c] for n in names} for c in range(len(uploads))],
                                    self.merge_method, **kw)
            dtype = self.running[names[0]].dtype
            self.last_update = {n: {"U": bases[n][0].to(dtype), "R": merged_R[n].to(dtype)} for n in names}
            update = {n: bases[n][0] @ merged_R[n] for n in names}
        else:
            products = [{n: factors[n][0][c].double() @ factors[n][1][c].double() for n in names}
                        for c in range(len(uploads))]
            update = merge_deltas(products, self.merge_method, **kw)
            self.last_update = {n: update[n].to(self.running[n].dtype) for n in names}
        for n in names:
            self.running[n] += update[n].to(self.running[n].dtype)

    def finished_task_update(self) -> dict:
        return self.running
