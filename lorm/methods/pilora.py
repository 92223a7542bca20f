"""PILoRA (Guo et al. 2024) as run by fed-mammoth (baselines2-spec section 6): prototype classifier + one LoRA
slot per task on the query and value projections of the first attention block.

Model. The frozen backbone gets rank-r LoRA pairs on the query and value of block / layer 0 only (MiniLM:
``LoRALinear`` on ``encoder.layer.0.attention.self.query`` and ``.value``; ViT: :class:`QKVWithQVLoRA` replaces the
fused ``qkv`` of block 0 by q, k, v slices with a LoRA pair on q and on v, k untouched). The live pairs are the
current task's slot; the earlier tasks' slots stay in the forward, frozen, as each layer's deployed delta
Σ_{i<t} B^i A^i (spec 6.5). The head is :class:`PrototypeHead`: logits = −‖f − p_c‖ / √d / τ for all C_tot
prototypes (0.1·N(0, I) from a seeded generator), of which only the current task's block trains.

Client (6.2). Unmasked cross-entropy over all C_tot classes + ``pl_weight``·mean d_y + ``ort_weight``·Σ_{i<t}
Σ|A^t A^iᵀ| + ``l1``·Σ|A^t| (both adapted layers), Adam with coupled L2 weight decay (``train_local(optimizer=
"adam")``) over the current LoRA pairs (lr ``lr_back``) and the current prototypes (lr ``lr``). Every batch's
detached features add to per-class sums (fp32); classes with more than ``min_count`` features upload their mean.

Server (6.3). Sample-weighted FedAvg of each of the four current matrices; each reported class's prototype is
the softmax(``soft_temp``·min-max-normalised reciprocal distance)-weighted mean of the clients' versions
(:func:`reweight_prototypes`). After a task the merged pairs become an old slot; the deployed model is
W0 + Σ_{i≤t} B^i A^i with all prototypes (prediction = nearest seen prototype).

Communication (spec section 8, lean payload; the ledger counts what is exchanged): download = current pairs +
every old slot's pairs (the client forms the frozen Σ itself) + all prototypes; upload = current pairs + current
prototypes + class means and their class ids + the sample count.
"""

from __future__ import annotations

import torch
from torch import nn

from lorm.federated.training import generator, train_local
from lorm.merging import fedavg
from lorm.methods.base import FederatedLoRA, RunContext
from lorm.models.lora import LoRALinear, inject_lora, set_factors, set_trainable

PROTO_INIT_STD = 0.1  # prototypes 0.1 N(0, I) (official and original code)
RECIPROCAL_EPS = 1e-10  # r_k = 1 / (s_k + eps) of the prototype re-weighting (official)

#: the adapted layers of the text backbone (relative to the Classifier; spec 6.5)
TEXT_TARGETS = [r"encoder\.bert\.encoder\.layer\.0\.attention\.self\.(?:query|value)"]
#: the fused qkv Linear of the first ViT block
VIT_QKV = "encoder.vit.blocks.0.attn.qkv"


# ---------------------------------------------------------------------------------------------- model pieces


class QKVWithQVLoRA(nn.Module):
    """A fused ``qkv`` Linear (d -> 3d) split into its q, k and v slices, with a :class:`LoRALinear` on q and on v
    (two independent pairs; one pair on the fused layer would share A between q, k and v) and k frozen and
    untouched. ``forward(x) = cat(q(x), k(x), v(x))`` = the fused layer's output plus the LoRA updates of the
    q and v slices (and their deployed deltas)."""

    def __init__(self, qkv: nn.Linear, rank: int, generator: torch.Generator | None = None):
        super().__init__()
        d = qkv.out_features // 3
        if qkv.out_features != 3 * d:
            raise ValueError(f"QKVWithQVLoRA: qkv has {qkv.out_features} outputs, not a multiple of 3")
        parts = []
        for i in range(3):
            part = nn.Linear(qkv.in_features, d, bias=qkv.bias is not None, device=qkv.weight.device,
                             dtype=qkv.weight.dtype)
            with torch.no_grad():
                part.weight.copy_(qkv.weight[i * d:(i + 1) * d])
                if qkv.bias is not None:
                    part.bias.copy_(qkv.bias[i * d:(i + 1) * d])
            part.requires_grad_(False)
            parts.append(part)
        self.in_features, self.out_features = qkv.in_features, qkv.out_features
        self.q = LoRALinear(parts[0], rank, generator=generator)
        self.k = parts[1]
        self.v = LoRALinear(parts[2], rank, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def attach_qv_lora(model: nn.Module, rank: int, generator: torch.Generator | None = None) -> dict[str, LoRALinear]:
    """Put PILoRA's adapters into a Classifier built without LoRA: the q and v of block / layer 0 get a rank-r
    pair. Returns ``{name: layer}`` of the two LoRALinear layers."""
    if model.spec.modality == "text":
        return inject_lora(model, TEXT_TARGETS, rank, generator=generator)
    parent_name, _, child = VIT_QKV.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
    except AttributeError:
        raise ValueError(f"pilora: backbone {model.spec.name} has no {VIT_QKV} (a timm ViT is expected)") from None
    qkv = getattr(parent, child)
    if not isinstance(qkv, nn.Linear):
        raise ValueError(f"pilora: {VIT_QKV} is a {type(qkv).__name__}, expected a plain nn.Linear")
    wrapped = QKVWithQVLoRA(qkv, rank, generator=generator)
    setattr(parent, child, wrapped)
    return {f"{VIT_QKV}.q": wrapped.q, f"{VIT_QKV}.v": wrapped.v}


class PrototypeHead(nn.Module):
    """Distance classifier: logits_c = −‖f − p_c‖ / √d / τ over all C prototypes (computed in fp32).

    The prototypes sit in a frozen buffer ``table`` (C, d); :meth:`load` copies the rows [lo, hi) of the current
    task into the trainable parameter ``current``, which replaces them in the forward, so an optimiser over
    ``current`` touches only that block (with coupled weight decay nothing else may be in the optimiser)."""

    def __init__(self, prototypes: torch.Tensor, temperature: float = 1.0):
        super().__init__()
        self.register_buffer("table", prototypes.detach().clone())
        self.current = nn.Parameter(prototypes.new_zeros(0, prototypes.shape[1]))
        self.lo = 0
        self.temperature = float(temperature)

    @property
    def in_features(self) -> int:
        return self.table.shape[1]

    @property
    def out_features(self) -> int:
        return self.table.shape[0]

    @torch.no_grad()
    def load(self, prototypes: torch.Tensor, block: tuple[int, int] | None = None) -> None:
        """All prototypes from ``prototypes``; rows ``block`` = [lo, hi) become the trainable ``current``."""
        self.table.copy_(prototypes)
        lo, hi = block if block is not None else (0, 0)
        self.lo = lo
        self.current = nn.Parameter(self.table[lo:hi].clone())

    def prototypes(self) -> torch.Tensor:
        lo, hi = self.lo, self.lo + self.current.shape[0]
        if hi == lo:
            return self.table
        return torch.cat([self.table[:lo], self.current, self.table[hi:]])

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """d_c(x) = ‖f − p_c‖ / √d, (B, C), fp32."""
        diff = features.float().unsqueeze(1) - self.prototypes().float().unsqueeze(0)
        return (diff.pow(2).sum(-1) / self.in_features).clamp_min(1e-12).sqrt()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distances(features) / self.temperature


# ---------------------------------------------------------------------------------------------- losses, merges


def orthogonality_loss(current: torch.Tensor, old: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i Σ|A^t A^iᵀ| (entrywise absolute sum) between the current down-projection and the old tasks' ones."""
    if not old:
        return current.new_zeros(())
    return sum((current @ a.to(current.dtype).T).abs().sum() for a in old)


def reweight_prototypes(client_protos: torch.Tensor, means: list[dict], lo: int, previous: torch.Tensor, *,
                        soft_temp: float = 5.0, unreported: str = "keep", official_index: bool = False) -> torch.Tensor:
    """Server merge of the current task's prototypes (spec 6.3). ``client_protos`` (K, n, d): every client's
    version of the n prototypes of classes [lo, lo + n); ``means[k]`` = {"classes": global class ids (m,),
    "mean": (m, d)} the class means client k reported; ``previous`` (n, d) the server's prototypes before the round.

    For each class c reported by at least one client: F = the reported means of c, P = all K versions of p_c,
    s_k = Σ_j ‖P_k − F_j‖, r_k = 1 / (s_k + 1e-10), r̃ = (r − min r) / (max r − min r) (all 0 when max = min:
    uniform weights instead of the official NaN, Q35), w = softmax(soft_temp · r̃), p_c = Σ_k w_k P_k.
    Unreported classes keep ``previous`` (``unreported="keep"``, official, Q36) or take the clients' plain mean
    (``"mean"``, the original code). The mean of class y re-weights prototype y − lo, or (``official_index``,
    Q34) prototype y mod n (differs only when the task's offset is not a multiple of its size)."""
    if unreported not in ("keep", "mean"):
        raise ValueError(f"unreported must be keep or mean, got {unreported!r}")
    K, n, _ = client_protos.shape
    protos = client_protos.double()
    out = previous.detach().clone()
    reported: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for m in means:
        for y, f in zip(m["classes"].tolist(), m["mean"]):
            j = int(y) % n if official_index else int(y) - lo
            if not 0 <= j < n:
                raise ValueError(f"class {y} reported for the task of classes [{lo}, {lo + n})")
            reported[j].append(f.double().to(protos.device))
    for j in range(n):
        P = protos[:, j]
        if not reported[j]:
            if unreported == "mean":
                out[j] = P.mean(0).to(out.dtype)
            continue
        s = torch.cdist(P, torch.stack(reported[j])).sum(1)
        r = 1.0 / (s + RECIPROCAL_EPS)
        span = r.max() - r.min()
        normalised = (r - r.min()) / span if span > 0 else torch.zeros_like(r)
        w = torch.softmax(soft_temp * normalised, dim=0)
        out[j] = (w.unsqueeze(1) * P).sum(0).to(out.dtype)
    return out


# ---------------------------------------------------------------------------------------------- the method


class PILoRA(FederatedLoRA):
    name = "pilora"
    uses_lora = False  # built without the default LoRA layers: PILoRA places its own (block 0, q and v)

    def __init__(self, ctx: RunContext):
        cfg = ctx.cfg["pilora"]
        model = ctx.model
        attach_qv_lora(model, cfg["rank"], generator=generator(ctx.seed, 22))
        num_classes, dim = model.head.out_features, model.head.in_features
        protos = PROTO_INIT_STD * torch.randn(num_classes, dim, generator=generator(ctx.seed, 21))
        model.head = PrototypeHead(protos.to(ctx.runtime.device), cfg["temperature"])
        super().__init__(ctx)
        self.cfg = cfg
        self.prototypes = model.head.table.detach().clone()  # the server's prototypes of all classes
        self.head = None  # no linear head: the prototypes are the classifier
        self.old: list[dict[str, dict[str, torch.Tensor]]] = []  # merged pairs of the finished tasks

    # ---- client ---------------------------------------------------------------------------------------
    def old_delta(self, old: list[dict], name: str) -> torch.Tensor | None:
        """Σ_i B^i A^i (float64) of one layer over the given old slots; None without any."""
        if not old:
            return None
        return sum(slot[name]["B"].double() @ slot[name]["A"].double() for slot in old)

    def load_state(self, state: dict, block: tuple[int, int] | None = None) -> None:
        """Client side: the old slots as each layer's frozen delta, the current pairs as the LoRA factors, all
        prototypes with the rows ``block`` trainable."""
        for name, layer in self.layers.items():
            delta = self.old_delta(state["old"], name)
            layer.set_delta(None if delta is None else delta.to(layer.base.weight.device))
        set_factors(self.model, state["factors"])
        self.model.head.load(state["prototypes"], block)

    def regulariser(self, task: int, old_A: dict[str, list[torch.Tensor]], sums: torch.Tensor,
                    counts: torch.Tensor):
        """The extra loss of a client step (PL + orthogonality + L1), which also accumulates the class sums."""
        lo = self.ctx.task_ranges[task][0]
        cfg, tau = self.cfg, self.model.head.temperature

        def loss(*, labels, features, logits, **_):
            with torch.no_grad():
                idx = labels - lo
                sums.index_add_(0, idx, features.detach().float())
                counts.index_add_(0, idx, torch.ones_like(idx, dtype=counts.dtype))
            d_y = -tau * logits.gather(1, labels.unsqueeze(1)).squeeze(1).float()
            total = cfg["pl_weight"] * d_y.mean()
            for name, layer in self.layers.items():
                total = total + cfg["ort_weight"] * orthogonality_loss(layer.lora_A, old_A[name])
                total = total + cfg["l1"] * layer.lora_A.abs().sum()
            return total

        return loss

    def client_update(self, client: int, task: int, rnd: int, state: dict) -> dict:
        lo, hi = self.ctx.task_ranges[task]
        self.load_state(state, block=(lo, hi))
        set_trainable(self.model, A=True, B=True)
        head, device = self.model.head, self.ctx.runtime.device
        lr = self.cfg["lr"]
        lr_back = self.cfg["lr_back"] if self.cfg["lr_back"] is not None else lr
        groups = [
            {"params": [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)], "lr": lr_back},
            {"params": [head.current], "lr": lr},
        ]
        old_A = {name: [slot[name]["A"].to(device) for slot in state["old"]] for name in self.layers}
        sums = torch.zeros(hi - lo, head.in_features, dtype=torch.float32, device=device)
        counts = torch.zeros(hi - lo, dtype=torch.float32, device=device)
        indices = self.ctx.client_indices[task][client]
        with self.ctx.timers("train"):
            train_local(
                self.model, self.ctx.train, indices, groups,
                epochs=self.ctx.cfg["fcil"]["local_epochs"], class_range=(0, head.out_features),
                runtime=self.ctx.runtime, gen=generator(self.ctx.seed, 2, task, rnd, client),
                weight_decay=self.cfg["weight_decay"], extra_loss=self.regulariser(task, old_A, sums, counts),
                optimizer="adam",
            )
        keep = torch.nonzero(counts > self.cfg["min_count"]).squeeze(1)
        return {
            "factors": {n: {f: getattr(l, f"lora_{f}").detach().clone() for f in ("A", "B")}
                        for n, l in self.layers.items()},
            "prototypes": head.current.detach().clone(),
            "means": {"classes": (keep + lo).cpu(), "mean": sums[keep] / counts[keep].unsqueeze(1)},
            "num_samples": len(indices),
        }

    # ---- server ---------------------------------------------------------------------------------------
    def broadcast(self, task: int, rnd: int) -> dict:
        return {"factors": self.factors, "old": self.old, "prototypes": self.prototypes}

    def aggregate(self, task: int, rnd: int, uploads: list[dict]) -> None:
        lo, hi = self.ctx.task_ranges[task]
        with self.ctx.timers("merge"):
            weights = [u["num_samples"] for u in uploads]
            for name in self.layers:
                for f in ("A", "B"):  # each of the four matrices separately (inexact for the product)
                    self.factors[name][f] = fedavg([u["factors"][name][f] for u in uploads], weights)
            block = reweight_prototypes(
                torch.stack([u["prototypes"] for u in uploads]), [u["means"] for u in uploads], lo,
                self.prototypes[lo:hi], soft_temp=self.cfg["soft_temp"], unreported=self.cfg["unreported"],
                official_index=self.cfg["official_index"])
            self.prototypes[lo:hi] = block.to(self.prototypes.dtype)

    def end_task(self, task: int) -> None:
        """The merged pairs become task t's frozen slot; its prototypes stay frozen from now on."""
        self.old.append({n: {f: t.detach().clone() for f, t in fs.items()} for n, fs in self.factors.items()})

    def deploy(self) -> None:
        """W0 + Σ_{i≤t} B^i A^i on q and v of block 0, all prototypes."""
        self.set_deployed({name: self.old_delta(self.old, name) for name in self.layers})

    def set_deployed(self, deltas: dict[str, torch.Tensor]) -> None:
        zero = {n: {"A": torch.zeros_like(f["A"]), "B": torch.zeros_like(f["B"])} for n, f in self.factors.items()}
        set_factors(self.model, zero)
        for name, layer in self.layers.items():
            layer.set_delta(deltas[name].to(device=layer.base.weight.device, dtype=layer.base.weight.dtype))
        self.model.head.load(self.prototypes)

    def state_dict(self) -> dict:
        return {"factors": self.factors, "prototypes": self.prototypes, "old": self.old}

    def load_state_dict(self, state: dict) -> None:
        self.factors, self.old = state["factors"], list(state["old"])
        self.prototypes = state["prototypes"].to(self.ctx.runtime.device)


__all__ = ["PILoRA", "PrototypeHead", "QKVWithQVLoRA", "attach_qv_lora", "orthogonality_loss",
           "reweight_prototypes"]
