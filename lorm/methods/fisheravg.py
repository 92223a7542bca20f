"""FisherAvg: every round the server takes the per-parameter Fisher-weighted average
theta = sum_k F_k theta_k / sum_k F_k, with F_k the diagonal Fisher of client k's locally trained model on its
data (spec section 13). Entries no client's loss touches (F = 0 everywhere) fall back to FedAvg. The
official code computes F on raw, un-normalised images (quirk Q13, ``baselines.stats_on_raw_inputs``)."""

from __future__ import annotations

from lorm.federated.client_stats import diagonal_fisher
from lorm.merging import fisher_merge
from lorm.methods.full import FederatedFull


class FisherAvg(FederatedFull):
    name = "fisheravg"

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        fisher = diagonal_fisher(self.model, self.ctx.train, indices, self.params, self.ctx.task_ranges[task],
                                 self.ctx.runtime, raw=self.raw_stats)
        return {"fisher": fisher}

    def merge(self, task: int, rnd: int, uploads: list[dict]):
        weights = self.model_weights(uploads)
        return {n: fisher_merge([u["params"][n] for u in uploads], [u["fisher"][n] for u in uploads], weights)
                for n in self.global_params}
