"""Ablation: B frozen, A trained every round and merged in closed form.

With the usual init (B = 0) A would get zero gradient, so this ablation mirrors it: A starts at 0 and B is a
fixed random Kaiming-uniform factor drawn per task on the server (our choice; the official code's
``train_matrix=A`` init is not documented)."""

from lorm.methods.lorm import LoRM


class LoRMAOnly(LoRM):
    name = "lorm-a-only"
    a_init = "zeros"
    b_init = "kaiming"

    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        return ("A",)
