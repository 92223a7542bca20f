"""A-only LoRM in which A learns (not the official ablation, see lorm_a_only.py): A starts at 0, B is a fixed
random Kaiming-uniform factor U(+-1/sqrt(r)) drawn per task on the server, A is trained every round and merged
in closed form.

At the same learning rate the product B A moves about 10x faster per step than in LoRM's B-rounds (B has rms
1/sqrt(3r), A's initial rms is 1/sqrt(3 d_in)): the most aggressive LoRA variant here, not a gentle ablation."""

from lorm.methods.lorm_a_only import LoRMAOnly


class LoRMAOnlyRandomB(LoRMAOnly):
    name = "lorm-a-only-random-b"
    a_init = "zeros"
    b_init = "kaiming"
