"""RegMean with full fine-tuning: every round, every adapted Linear layer of the backbone (the LoRA targets:
qkv/proj/fc1/fc2 of a ViT, the six projections of a BERT block) and the head are merged by RegMean
W = (sum_k W_k G_k)(sum_k G_k)^-1 with shrunk Grams G_k = alpha X_k^T X_k + (1 - alpha) diag (alpha 0.5);
every other parameter, biases included, by sample-weighted FedAvg (spec section 13; Jin et al. 2023).

Clients upload the upper triangle of each (symmetric) Gram, computed on their un-augmented inputs with the
locally trained model."""

from __future__ import annotations

from lorm.federated.comm import pack_symmetric, unpack_symmetric
from lorm.federated.training import collect_statistics
from lorm.merging import merge_head, regmean_merge, shrink
from lorm.methods.full import FederatedFull, RunContext
from lorm.models.backbones import target_linears

HEAD = "head"


class RegMean(FederatedFull):
    name = "regmean"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.alpha = ctx.cfg["regmean"]["alpha"]
        self.linears = target_linears(self.model, self.model.spec, ctx.cfg["model"].get("lora_targets"))
        self.linears[HEAD] = self.model.head

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        stats, _ = collect_statistics(self.model, self.ctx.train, indices, self.linears, "full",
                                      runtime=self.ctx.runtime)
        return {"grams": {n: pack_symmetric(shrink(g, self.alpha)) for n, g in stats.items()}}

    def merge(self, task: int, rnd: int, uploads: list[dict]):
        merged = super().merge(task, rnd, uploads)  # FedAvg of everything, then RegMean for the Linear weights
        for name, layer in self.linears.items():
            key = f"{name}.weight"
            grams = [unpack_symmetric(u["grams"][name], layer.in_features) for u in uploads]
            weights = [u["params"][key] for u in uploads]
            if name == HEAD:  # head rows of other tasks' classes are identical on every client: kept bit-exactly
                merged[key], merged["head.bias"] = merge_head(
                    weights, [u["params"]["head.bias"] for u in uploads], grams, self.model_weights(uploads))
            else:
                merged[key] = regmean_merge(weights, grams)
        return merged
