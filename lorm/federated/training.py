"""The one local training loop shared by every method, plus the statistics pass and evaluation.

Methods never write their own loop: they choose what is trainable, the optimiser's parameter groups and the
class slice of the loss, and may add a regulariser through ``extra_loss``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lorm.data.tensors import EncodedSplit, iterate_batches
from lorm.models.stats import InputStatistics


# A method's regulariser: (inputs=, labels=, features=, logits=) -> scalar loss added to the cross-entropy.
ExtraLoss = Callable[..., torch.Tensor]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, task, round, client, ...); stable across processes."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass
class Runtime:
    """Where and how to compute: resolved once per run from the config's runtime section."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None = full fp32
    batch_size: int = 16
    eval_batch_size: int = 64

    @classmethod
    def from_config(cls, runtime_cfg: dict, batch_size: int) -> "Runtime":
        device = resolve_device(runtime_cfg.get("device", "auto"))
        return cls(device, resolve_amp(runtime_cfg.get("amp", "auto"), device), batch_size,
                   runtime_cfg.get("eval_batch_size", 64))

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self):
        # fp16 needs loss scaling; bf16 and fp32 do not.
        enabled = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        return torch.amp.GradScaler("cuda", enabled=enabled)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config key runtime.device: {name} requested but CUDA is not available (use auto or cpu)")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs, fp32 on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


#: local optimisers of train_local: decoupled (AdamW) or coupled (Adam, L2 in the gradient) weight decay
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def train_local(
    model: torch.nn.Module,
    data: EncodedSplit,
    indices,
    param_groups: list[dict],
    *,
    epochs: int,
    class_range: tuple[int, int],
    runtime: Runtime,
    gen: torch.Generator,
    weight_decay: float = 0.0,
    extra_loss: ExtraLoss | None = None,
    optimizer: str = "adamw",
) -> dict:
    """Local training: a fresh AdamW (spec section 5: state reset every round), E epochs of shuffled batches,
    cross-entropy on the logits of ``class_range`` = [lo, hi) only (labels shifted by lo).

    ``optimizer``: "adamw" (decoupled weight decay, every method's default) or "adam" (weight decay as an L2 term
    coupled into the gradient, PILoRA's; every parameter passed then drifts towards 0, so pass only what trains).

    ``extra_loss(inputs=, labels=, features=, logits=)`` adds a method's regulariser to every step's loss; it
    gets the pooled features and the logits over *all* classes of this very forward pass (no second forward)."""
    lo, hi = class_range
    groups = [g for g in param_groups if g["params"]]
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"train_local: optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    opt = OPTIMIZERS[optimizer](groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    scaler = runtime.grad_scaler()
    model.train()
    total_loss, steps, seen = 0.0, 0, 0
    augment_gen = torch.Generator().manual_seed(derive_seed(gen.initial_seed(), 1))  # own stream: crops/flips
    for _ in range(epochs):
        for idx in iterate_batches(indices, runtime.batch_size, gen, shuffle=True):
            inputs, labels = data.batch(idx, runtime.device, augment=True, generator=augment_gen)
            with runtime.autocast():
                features = model.features(inputs)
                logits = model.head(features)
                loss = F.cross_entropy(logits[:, lo:hi].float(), labels - lo)
                if extra_loss is not None:
                    loss = loss + extra_loss(inputs=inputs, labels=labels, features=features, logits=logits)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total_loss += float(loss.detach()) * len(idx)
            steps += 1
            seen += len(idx)
    return {"loss": total_loss / max(seen, 1), "steps": steps, "samples": seen}


@torch.no_grad()
def collect_statistics(
    model: torch.nn.Module,
    data: EncodedSplit,
    indices,
    modules: dict[str, torch.nn.Module],
    kinds: dict[str, str] | str,
    *,
    runtime: Runtime,
    passes: int = 1,
    augment_gen: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Input statistics of ``modules`` over the client's data (eval mode, no gradients, padding excluded).

    With ``augment_gen`` the passes see training augmentation (spec Q7: the official statistics passes do), so
    several passes see different crops. Text has no augmentation: extra passes only rescale the statistics
    (a common factor that cancels in every merge). Returns (statistics, token counts)."""
    model.eval()
    with InputStatistics(modules, kinds) as stats:
        indices = np.asarray(indices, dtype=np.int64)
        ordered = indices[data.length_order(indices)]  # sums are order-free: visit by length, little padding
        for _ in range(passes):
            for idx in iterate_batches(ordered, runtime.eval_batch_size):
                inputs, _ = data.batch(idx, runtime.device, augment=augment_gen is not None, generator=augment_gen)
                mask = EncodedSplit.token_mask(inputs)
                if mask is not None:
                    stats.set_token_mask(mask)
                with runtime.autocast():
                    model(inputs)
        return stats.results(), dict(stats.num_tokens)


@torch.no_grad()
def predict(model: torch.nn.Module, data: EncodedSplit, indices, num_seen: int, runtime: Runtime) -> np.ndarray:
    """Correctness of each row of ``indices`` (same order) with argmax over the logits of the first
    ``num_seen`` classes: no task identity. Rows are visited sorted by length (accuracy is order-free)."""
    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    perm = data.length_order(indices)
    correct = np.zeros(len(indices), dtype=bool)
    start = 0
    for idx in iterate_batches(indices[perm], runtime.eval_batch_size):
        inputs, labels = data.batch(idx, runtime.device)
        with runtime.autocast():
            logits = model(inputs)[:, :num_seen]
        correct[perm[start:start + len(idx)]] = (logits.argmax(1) == labels).cpu().numpy()
        start += len(idx)
    return correct
