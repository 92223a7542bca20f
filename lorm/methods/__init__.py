"""Method registry: name -> class. One file per method, all behind lorm.methods.base.Method."""

from lorm.methods.ccvr import CCVR
from lorm.methods.coda_p import CODAP
from lorm.methods.dare_ties import DARETIES
from lorm.methods.ewc import EWC
from lorm.methods.fedavg import FedAvg
from lorm.methods.fedavg_lora import FedAvgLoRA
from lorm.methods.fedproto import FedProto
from lorm.methods.fisheravg import FisherAvg
from lorm.methods.knots_dare_ties import KnOTSDARETIES
from lorm.methods.knots_ties import KnOTSTIES
from lorm.methods.l2p import L2P
from lorm.methods.lwf import LwF
from lorm.methods.pilora import PILoRA
from lorm.methods.regmean import RegMean
from lorm.methods.ta import TA
from lorm.methods.target import TARGET
from lorm.methods.ties import TIES
from lorm.methods.ffa_lora import FFALoRA
from lorm.methods.joint import Joint
from lorm.methods.lorm import LoRM
from lorm.methods.lorm_a_only import LoRMAOnly
from lorm.methods.lorm_a_only_random_b import LoRMAOnlyRandomB
from lorm.methods.lorm_b_only import LoRMBOnly

from lorm.methods.base import FederatedLoRA
from lorm.methods.names import FULL_FINETUNING, METHOD_NAMES, PROMPT_METHODS, TASK_MERGE

METHODS = {cls.name: cls for cls in (LoRM, LoRMAOnly, LoRMBOnly, FedAvgLoRA, FFALoRA, Joint,
                                     FedAvg, EWC, LwF, FisherAvg, RegMean, CCVR, FedProto,
                                     TA, TIES, DARETIES, KnOTSTIES, KnOTSDARETIES, LoRMAOnlyRandomB,
                                     PILoRA, L2P, CODAP, TARGET)}
assert tuple(METHODS) == METHOD_NAMES, "lorm/methods/names.py is out of date"
# methods built without the default LoRA layers: full fine-tuning, a LoRA method placing its own (PILoRA), or
# a prompt method (L2P, CODA-P)
assert FULL_FINETUNING == tuple(n for n, cls in METHODS.items()
                                if not cls.uses_lora and not issubclass(cls, FederatedLoRA)
                                and n not in PROMPT_METHODS), "names.py: FULL_FINETUNING"
assert set(PROMPT_METHODS) <= set(METHODS), "names.py: PROMPT_METHODS"

assert set(TASK_MERGE) <= set(METHODS), "names.py: TASK_MERGE"

__all__ = ["FULL_FINETUNING", "METHODS", "METHOD_NAMES", "PROMPT_METHODS", "TASK_MERGE"]
