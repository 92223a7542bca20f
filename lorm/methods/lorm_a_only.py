"""Ablation ``train_matrix=A`` exactly as the official code runs it: B starts at 0 and is never trained, A is
trained every round and merged in closed form (LoRM spec section 16; official
fed-mammoth `train_matrix=A`).

With B = 0 the gradient of A is B^T dL/dW = 0, so A never moves (AdamW, weight decay 0) and B A = 0 every round:
the run is a frozen backbone plus a classifier head trained every round and RegMean-merged (a federated
linear probe). That is what the official ablation measures; ``lorm-a-only-random-b`` is the variant in which A
does learn."""

from lorm.methods.lorm import LoRM


class LoRMAOnly(LoRM):
    name = "lorm-a-only"

    def phase(self, task: int, rnd: int) -> tuple[str, ...]:
        return ("A",)
