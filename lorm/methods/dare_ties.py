"""DARE-TIES on the dense products: seeded Bernoulli drop with rescale, then sign election and disjoint mean. (lorm.methods.task_merge)"""

from lorm.methods.task_merge import FederatedTaskMerge


class DARETIES(FederatedTaskMerge):
    name = "dare-ties"
    merge_method = "dare-ties"
    aligned = False
