"""FFA-LoRA: A frozen at its random init, B trained and FedAvg-merged (exact for B, since A is shared)."""

from lorm.methods.fedavg_lora import FedAvgLoRA


class FFALoRA(FedAvgLoRA):
    name = "ffa-lora"

    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        return ("B",)
