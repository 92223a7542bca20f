"""KnOTS model-merging benchmark (knots-spec sections 3, 4, 7-10): ``python -m lorm.mergebench``.

Pipeline, one job per step (see :mod:`lorm.mergebench.cli`):

1. ``finetune``: one LoRA model per task from the shared initialisation (:mod:`.finetune`), saving its factors,
   its head and its fine-tuned validation / test accuracy (the normalisation denominators).
2. ``merge``: per method, greedy coordinate search on validation (:mod:`.search`), then one evaluation on test
   of the merged model W0 + dW_merged with every task's own head, and of the joint head (:mod:`.evaluate`).
3. ``alignment``: CKA heatmaps of the tasks' updates, LoRA vs KnOTS.
4. ``report``: Markdown + CSV table beside the paper's numbers, bar figure (:mod:`.report`).

Tasks (:mod:`.tasks`): the offline default cuts WordNet-40 into 8 tasks of 5 consecutive classes on MiniLM with
one trained head per task; the paper config (config/merge-paper.yaml) runs CLIP ViT-B/32 on the 8 vision data
sets with frozen zero-shot text heads.
"""

from .config import BenchError, ConfigError, load_merge_config, validate_merge_config
from .search import Coordinate, greedy_search

__all__ = ["BenchError", "ConfigError", "Coordinate", "greedy_search", "load_merge_config", "validate_merge_config"]
