"""KnOTS-DARE-TIES: DARE-TIES on the aligned parts U^T B_c A_c. (lorm.methods.task_merge)"""

from lorm.methods.task_merge import FederatedTaskMerge


class KnOTSDARETIES(FederatedTaskMerge):
    name = "knots-dare-ties"
    merge_method = "dare-ties"
    aligned = True
