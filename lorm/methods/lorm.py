"""LoRM: alternate B- and A-rounds; each round's merge is the unique least-squares solution (spec sections 2-7).

Clients upload the trained factor, the head, per-layer input statistics (diagonal energies when
``lorm.alpha_backbone == 0``, else the shrunk full Gram) and the full, shrunk Gram of the head input.
Across tasks the server keeps S += dW_t G_t, Gamma += G_t and deploys W0 + S Gamma^+.

``lorm.stats_model: filler`` reproduces the official code's statistics model (spec quirk Q1): for t > 0 every
statistics pass (each round and at the end of the task) runs on W0 + (t mean_old + B A) / (t + 1), mean_old the
simple mean of the earlier tasks' merged deltas, which the clients download once per task.
``lorm.head_merge: fedavg`` replaces the RegMean head merge by FedAvg (a diagnostic; no head Gram is sent).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from lorm.federated.comm import pack_symmetric, unpack_symmetric
from lorm.federated.training import collect_statistics, generator
from lorm.merging import TaskAccumulator, lorm_merge_A, lorm_merge_B, merge_head, shrink, sum_grams
from lorm.methods.base import FederatedLoRA, MeanOfTaskDeltas, RunContext

HEAD = "head"


class LoRM(FederatedLoRA):
    name = "lorm"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        cfg = ctx.cfg["lorm"]
        self.alpha_backbone = cfg["alpha_backbone"]
        self.alpha_head = cfg["alpha_head"]
        self.passes = cfg["stats_passes"]
        self.stats_augment = cfg.get("stats_augment", True)
        # With alpha 0 only the diagonal of each Gram is used, so only the diagonal is computed (quirk Q2).
        self.backbone_kind = "diag" if self.alpha_backbone == 0 else "full"
        self.accumulator = TaskAccumulator()  # S, Gamma and the number of merged tasks
        self.stats_model = cfg.get("stats_model", "trained")
        self.head_regmean = cfg.get("head_merge", "regmean") == "regmean"
        # official filler model (Q1): the simple mean of the finished tasks' merged deltas, kept only when used
        self.old_deltas = MeanOfTaskDeltas() if self.stats_model == "filler" else None

    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        # B first: with B = 0 the gradient of A is zero, so an A-round first would be a no-op.
        return ("B",) if rnd % 2 == 0 else ("A",)

    @contextmanager
    def _statistics_model(self):
        """The model the statistics pass sees. trained: as loaded (W0 + B A). filler, t > 0: W0 + (t mean_old +
        B A) / (t + 1) = W0 + (sum of old deltas + B A) / (t + 1), deployed as a dense delta with the factors
        zeroed for the pass and restored afterwards."""
        if self.old_deltas is None or self.old_deltas.count == 0:
            yield
            return
        t, saved = self.old_deltas.count, {}
        with torch.no_grad():
            for name, layer in self.layers.items():
                saved[name] = (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
                own = layer.lora_B.double() @ layer.lora_A.double()
                layer.set_delta((self.old_deltas.sums[name].to(own.device) + own) / (t + 1))
                layer.lora_A.zero_()
                layer.lora_B.zero_()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    layer.set_delta(None)
                    layer.lora_A.copy_(saved[name][0])
                    layer.lora_B.copy_(saved[name][1])

    def _backbone_grams(self, indices, with_head: bool, stream: tuple[int, ...]) -> dict:
        modules = dict(self.layers)
        kinds = {name: self.backbone_kind for name in self.layers}
        if with_head:
            modules[HEAD], kinds[HEAD] = self.model.head, "full"
        # augmentation of the statistics passes has its own random stream per (kind, task, round, client)
        augment = generator(self.ctx.seed, *stream) if self.stats_augment else None
        with self._statistics_model():
            stats, _ = collect_statistics(self.model, self.ctx.train, indices, modules, kinds,
                                          runtime=self.ctx.runtime, passes=self.passes, augment_gen=augment)
        grams = {name: shrink(stats[name], self.alpha_backbone) for name in self.layers}
        return grams, (shrink(stats[HEAD], self.alpha_head) if with_head else None)

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        if rnd == 0 and self.old_deltas is not None and self.old_deltas.count:
            # the filler model needs mean_old on the client: one dense download per client and task
            self.ctx.ledger.download(self.old_deltas.mean(), kind="filler_delta")
        grams, head_gram = self._backbone_grams(indices, with_head=self.head_regmean, stream=(3, task, rnd, client))
        if not self.head_regmean:
            return {"grams": grams}
        # the head Gram is symmetric: ship its upper triangle only (half the dominant part of the upload)
        return {"grams": grams, "head_gram": pack_symmetric(head_gram)}

    def merge_factors(self, task, rnd, phase, uploads) -> None:
        for name in self.layers:
            grams = [u["grams"][name] for u in uploads]
            if phase == ("B",):
                self.factors[name]["B"] = lorm_merge_B(
                    [u["factors"][name]["B"] for u in uploads], self.factors[name]["A"], grams)
            elif phase == ("A",):
                self.factors[name]["A"] = lorm_merge_A([u["factors"][name]["A"] for u in uploads], grams)
            else:  # pragma: no cover - guarded by phase()
                raise ValueError(f"LoRM merges one factor per round, got {phase}")

    def merge_head(self, uploads) -> None:
        if not self.head_regmean:
            return super().merge_head(uploads)  # FedAvg of weight and bias
        weight, bias = merge_head(
            [u["head"]["weight"] for u in uploads], [u["head"]["bias"] for u in uploads],
            [unpack_symmetric(u["head_gram"], self.model.head.in_features) for u in uploads],
            [u["num_samples"] for u in uploads])
        self.head = {"weight": weight, "bias": bias}

    def end_task(self, task: int) -> None:
        """Clients send statistics of the merged model W0 + B_t A_t on their task data (spec section 7)."""
        ctx = self.ctx
        per_layer = {name: [] for name in self.layers}
        state = {"factors": self.factors, "head": self.head}
        for client, indices in enumerate(ctx.client_indices[task]):
            ctx.ledger.download({"factors": self.factors}, kind="end_of_task")
            self.load_state(state)
            with ctx.timers("statistics"):
                grams, _ = self._backbone_grams(indices, with_head=False, stream=(4, task, client))
            ctx.ledger.upload(grams, kind="end_of_task")
            for name, g in grams.items():
                per_layer[name].append(g)
        with ctx.timers("merge"):
            for name in self.layers:
                self.accumulator.add(name, self.task_delta(name), sum_grams(per_layer[name]))
            if self.old_deltas is not None:  # the official server updates it at the next task's start: same
                self.old_deltas.add(self.finished_task_update())
        self.accumulator.end_task()

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "accumulator": self.accumulator.state_dict()}
        if self.old_deltas is not None:
            state["old_deltas"] = self.old_deltas.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.accumulator.load_state_dict(state["accumulator"])
        if self.old_deltas is not None:
            self.old_deltas.load_state_dict(state["old_deltas"])

    def deploy(self) -> None:
        if self.accumulator.num_tasks <= 1:  # first task: W0 + B_0 A_0 (spec section 7.3)
            deltas = {name: self.task_delta(name) for name in self.layers}
        else:
            deltas = {name: self.accumulator.delta(name) for name in self.layers}
        self.set_deployed(deltas)
