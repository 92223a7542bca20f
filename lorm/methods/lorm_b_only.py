"""Ablation: A frozen at its random init for the whole task, B trained every round and merged in closed form
(FFA-LoRA's factorisation with LoRM's exact merge instead of FedAvg)."""

from lorm.methods.lorm import LoRM


class LoRMBOnly(LoRM):
    name = "lorm-b-only"

    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        return ("B",)
