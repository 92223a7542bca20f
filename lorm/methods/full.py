"""Full fine-tuning baselines: every parameter of the backbone and the head trains on the clients.

``FederatedFull`` is FedAvg (McMahan et al.; fed-mammoth's ``fedavg``, spec section 13) and the common base of
EWC, LwF, FisherAvg, RegMean, CCVR and FedProto, which override one hook each:

    regulariser(task, rnd)           -> extra loss of local training (EWC, LwF, FedProto)
    client_statistics(...)           -> extra upload after local training (FisherAvg's Fisher, RegMean's Grams, ...)
    merge(task, rnd, uploads)        -> the server's aggregation (default: FedAvg)
    after_merge(task, rnd)           -> server work on the merged model (CCVR's calibration)

Methods that train a subset (the prompt methods of baselines2-spec section 2.2) override two more:

    attach_modules()                 -> add modules to the model (prompts, ...) before its parameters are listed
    trainable(name)                  -> whether a parameter trains (default: every one)
    receive(task, state), send(task) -> what a client takes from the broadcast and uploads (default: every
                                        trainable tensor; CODA-Prompt exchanges slices of them)

Only the trainable parameters get ``requires_grad``, a copy in the server's global model, a place in the optimiser
and in the upload (so the communication ledger counts them only); the others stay frozen at their initial values.

The model is sequentially fine-tuned across tasks: what is deployed after a task is simply the global model.
"""

from __future__ import annotations

import torch

from lorm.federated.training import ExtraLoss, generator, train_local
from lorm.merging import fedavg
from lorm.methods.base import Method, RunContext


class FederatedFull(Method):
    uses_lora = False

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.attach_modules()
        self.model.to(ctx.runtime.device)  # attached modules are built on the CPU (a no-op without them)
        named = dict(self.model.named_parameters())
        self.params = {n: p for n, p in named.items() if self.trainable(n)}
        if not self.params:
            raise RuntimeError(f"method {self.name}: trainable() selects none of the model's parameters")
        for n, p in named.items():
            p.requires_grad_(n in self.params)
        # the server's global model: one copy of every trainable tensor (clients overwrite the live model)
        self.global_params = {n: p.detach().clone() for n, p in self.params.items()}
        cfg = ctx.cfg["baselines"]
        self.lr = cfg["lr"]
        self.raw_stats = cfg["stats_on_raw_inputs"]
        self.weight_decay = ctx.cfg["optim"]["weight_decay"]

    # ---- hooks ----------------------------------------------------------------------------------------
    def attach_modules(self) -> None:
        """Add the method's own modules to ``self.model`` (e.g. wrap ``model.encoder`` in a
        lorm.models.prompting.PromptedEncoder); called once, before the parameters are enumerated."""

    def trainable(self, name: str) -> bool:
        """Whether the parameter ``name`` (as in ``model.named_parameters()``) trains and is exchanged."""
        return True

    def regulariser(self, task: int, rnd: int) -> ExtraLoss | None:
        return None

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        return {}

    def model_weights(self, uploads: list[dict]) -> list[float]:
        """Weights of the model average: sample counts (FedAvg)."""
        return [u["num_samples"] for u in uploads]

    def merge(self, task: int, rnd: int, uploads: list[dict]) -> dict[str, torch.Tensor]:
        weights = self.model_weights(uploads)
        return {n: fedavg([u["params"][n] for u in uploads], weights) for n in self.global_params}

    def after_merge(self, task: int, rnd: int) -> None:
        pass

    def local_lr(self) -> float:
        return self.lr

    def trains(self, task: int, rnd: int) -> bool:
        """Whether clients train in this round (EWC's official quirk Q11 skips the last round of a task)."""
        return True

    # ---- shared mechanics -----------------------------------------------------------------------------
    def load_global(self, params: dict[str, torch.Tensor] | None = None) -> None:
        with torch.no_grad():
            for n, p in (params or self.global_params).items():
                self.params[n].copy_(p)

    def begin_task(self, task: int) -> None:
        pass

    def broadcast(self, task: int, rnd: int) -> dict:
        return {"params": self.global_params}

    def receive(self, task: int, state: dict) -> None:
        """Client side: put the broadcast into the live model (default: every trainable tensor)."""
        self.load_global(state["params"])

    def send(self, task: int) -> dict[str, torch.Tensor]:
        """Client side: the trained tensors to upload (default: every trainable tensor)."""
        return {n: p.detach().clone() for n, p in self.params.items()}

    def client_update(self, client: int, task: int, rnd: int, state: dict) -> dict:
        self.receive(task, state)
        indices = self.ctx.client_indices[task][client]
        if self.trains(task, rnd):
            with self.ctx.timers("train"):
                train_local(
                    self.model, self.ctx.train, indices, [{"params": list(self.params.values()), "lr": self.local_lr()}],
                    epochs=self.ctx.cfg["fcil"]["local_epochs"], class_range=self.ctx.task_ranges[task],
                    runtime=self.ctx.runtime, gen=generator(self.ctx.seed, 2, task, rnd, client),
                    weight_decay=self.weight_decay, extra_loss=self.regulariser(task, rnd),
                )
        upload = {"params": self.send(task), "num_samples": len(indices)}
        with self.ctx.timers("statistics"):
            upload.update(self.client_statistics(client, task, rnd, indices))
        return upload

    def aggregate(self, task: int, rnd: int, uploads: list[dict]) -> None:
        with self.ctx.timers("merge"):
            self.global_params = self.merge(task, rnd, uploads)
        self.after_merge(task, rnd)

    def deploy(self) -> None:
        self.load_global()

    def state_dict(self) -> dict:
        return {"params": self.global_params}

    def load_state_dict(self, state: dict) -> None:
        self.global_params = dict(state["params"])

