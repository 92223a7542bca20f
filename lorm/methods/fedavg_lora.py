"""FedAvg-LoRA: both factors trained, sample-weighted FedAvg of A, B and the head every round; the model after
several tasks is W0 + the simple mean of the task deltas B_t A_t (fed-mammoth's ``lora``, spec section 13).
Averaging A and B separately is inexact: mean(B_k) mean(A_k) != mean(B_k A_k) — the error LoRM removes."""

from lorm.methods.base import FederatedLoRA, MeanOfTaskDeltas, RunContext


class FedAvgLoRA(FederatedLoRA):
    name = "fedavg-lora"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.task_deltas = MeanOfTaskDeltas()

    def end_task(self, task: int) -> None:
        with self.ctx.timers("merge"):
            self.task_deltas.add(self.finished_task_update())

    def deploy(self) -> None:
        self.set_deployed(self.task_deltas.mean())

    def state_dict(self) -> dict:
        return {**super().state_dict(), "task_deltas": self.task_deltas.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.task_deltas.load_state_dict(state["task_deltas"])
