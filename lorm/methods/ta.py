"""Task arithmetic over the clients' products: lam * mean_c B_c A_c (with lam = 1 and 'mean' the unweighted FedAvg of the products, not of the factors); sent back as the exact (U, R) factors of KnOTS-TA, which equals TA. (lorm.methods.task_merge)"""

from lorm.methods.task_merge import FederatedTaskMerge


class TA(FederatedTaskMerge):
    name = "ta"
    merge_method = "ta"
    aligned = True
