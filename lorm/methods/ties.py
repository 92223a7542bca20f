"""TIES on the dense products B_c A_c: per-client top-K trim over all layers together, sign election, disjoint mean (Yadav et al. 2023). (lorm.methods.task_merge)"""

from lorm.methods.task_merge import FederatedTaskMerge


class TIES(FederatedTaskMerge):
    name = "ties"
    merge_method = "ties"
    aligned = False
