"""LwF: FedAvg + distillation from the global model of the previous task (spec section 13).

Loss = CE(current task) + alpha * KL(smooth(p_teacher) || smooth(p_student)) on the logits of the *old*
classes (those of earlier tasks; the first task has none), where smooth(p) = p^(1/T) / sum p^(1/T) is the
official power-temperature softening of softmax probabilities. The official code distils the current task's
logit slice instead (quirk Q12, ``lwf.distill_slice: current``). The teacher is the model every client
receives in the task's first round, so it costs no extra communication."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from lorm.methods.full import FederatedFull, RunContext


def smoothed_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log of p^(1/T) / sum p^(1/T) with p = softmax(logits): equals log_softmax(logits / T)."""
    return F.log_softmax(logits.float() / temperature, dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of KL(teacher || student) of the softened distributions (0 when they agree)."""
    log_t = smoothed_log_probs(teacher_logits, temperature)
    log_s = smoothed_log_probs(student_logits, temperature)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean()


class LwF(FederatedFull):
    name = "lwf"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        cfg = ctx.cfg["lwf"]
        self.alpha, self.temperature, self.slice = cfg["alpha"], cfg["temperature"], cfg["distill_slice"]
        self.teacher: torch.nn.Module | None = None

    def begin_task(self, task: int) -> None:
        if task == 0:
            return
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.model).requires_grad_(False)
        with torch.no_grad():  # the teacher = the global model after the previous task (frozen tensors: as built)
            teacher_params = dict(self.teacher.named_parameters())
            for n, p in self.global_params.items():
                teacher_params[n].copy_(p)
        self.teacher.eval()

    def distill_range(self, task: int) -> tuple[int, int]:
        lo, hi = self.ctx.task_ranges[task]
        return (lo, hi) if self.slice == "current" else (0, lo)

    def regulariser(self, task: int, rnd: int):
        if self.teacher is None or task == 0:
            return None
        lo, hi = self.distill_range(task)

        def loss(*, inputs, logits, **_):
            with torch.no_grad(), self.ctx.runtime.autocast():
                teacher_logits = self.teacher(inputs)[:, lo:hi]
            return self.alpha * distillation_loss(logits[:, lo:hi], teacher_logits, self.temperature)

        return loss

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None  # rebuilt from the restored global model by begin_task
