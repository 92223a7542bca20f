"""KnOTS-TIES: TIES on the aligned parts U^T B_c A_c of one SVD of the clients' concatenated updates. (lorm.methods.task_merge)"""

from lorm.methods.task_merge import FederatedTaskMerge


class KnOTSTIES(FederatedTaskMerge):
    name = "knots-ties"
    merge_method = "ties"
    aligned = True
