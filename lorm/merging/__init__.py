"""Pure linear algebra of merging (spec sections 1-4, 6, 7): torch tensors in, tensors out, float64 inside.

Grams are 1-D (d_in,) diagonal energies or 2-D (d_in, d_in) full X^T X matrices; see regmean.py.
"""

from .accumulate import TaskAccumulator
from .fedavg import fedavg
from .fisher import fisher_merge
from .knots import knots_align, knots_align_dense, knots_merge, knots_merge_aligned
from .lorm import lorm_merge_A, lorm_merge_B
from .moments import pool_class_moments
from .regmean import SingularGramWarning, merge_head, regmean_merge, shrink, sum_grams
from .task_merging import disjoint_merge, elect_signs, merge_deltas, merge_vectors, ties_mask, trim_mask

__all__ = [
    "SingularGramWarning",
    "TaskAccumulator",
    "fedavg",
    "disjoint_merge",
    "elect_signs",
    "fisher_merge",
    "knots_align",
    "knots_align_dense",
    "knots_merge",
    "knots_merge_aligned",
    "lorm_merge_A",
    "lorm_merge_B",
    "merge_deltas",
    "merge_head",
    "merge_vectors",
    "pool_class_moments",
    "regmean_merge",
    "shrink",
    "sum_grams",
    "ties_mask",
    "trim_mask",
]
