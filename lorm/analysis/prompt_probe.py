"""How much class information the prompt methods' features carry before any training (a diagnostic).

L2P's head reads the mean of the prompt tokens' outputs (``l2p.pool: prompts``) or of CLS and the prompts
(``cls+prompts``); CODA-P and LoRA methods read the backbone's own pooled feature. This fits the same linear
probe (multinomial logistic regression, full batch, L-BFGS, on standardised features) to each feature of the
frozen backbone on a prepared Dataset's train split and reports its accuracy on the evaluation split, with the
mean pairwise cosine of the features (near 1 = almost the same vector for every input):

    python -m lorm.analysis.prompt_probe --config results/config/wordnet40-minilm.resolved.yaml \\
        --dataset results/data/wordnet40-minilm/dataset.json

The prompt pool is L2P's initialisation for ``--seed`` (the run seed), i.e. what a run starts from.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows."""
    unit = F.normalize(features.double(), dim=1)
    n = len(unit)
    total = unit.sum(0).pow(2).sum() - n  # sum over i != j of cos(i, j)
    return float(total / (n * (n - 1)))


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, l2: float = 1e-3, steps: int = 200) -> float:
    """Test accuracy (%) of multinomial logistic regression fitted on standardised train features."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], num_classes, dtype=train_x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=train_x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((test_x @ weight + bias).argmax(1) == test_y).double().mean() * 100)


@torch.no_grad()
def prompt_features(cfg: dict, dataset: dict, seed: int, batch_size: int = 64) -> dict:
    """{name: (train features, test features)} of the frozen backbone: its own pooled feature and L2P's two
    prompt poolings with the pool L2P initialises for ``seed``; plus the labels."""
    from lorm.data.tensors import encode_split
    from lorm.federated.training import generator
    from lorm.methods.l2p import L2P_INIT_STREAM, L2PPromptPool
    from lorm.models.backbones import build_classifier, load_tokenizer
    from lorm.models.prompting import PromptedEncoder

    classes = len(dataset["classes"])
    model = build_classifier(cfg["model"], classes, lora=False).eval()
    l2p = cfg["l2p"]
    pool = L2PPromptPool(model.head.in_features, l2p["pool_size"], l2p["prompt_length"], l2p["top_n"],
                         generator(seed, L2P_INIT_STREAM))
    encoder = PromptedEncoder(model.encoder, pool)
    tokenizer = load_tokenizer(cfg["model"])
    label_map = np.arange(classes)
    out = {"query": [], "l2p prompts": [], "l2p cls+prompts": []}
    labels = {}
    for split in ("train", "test"):
        enc = encode_split(dataset[split], "text", label_map, tokenizer=tokenizer,
                           max_length=cfg["dataset"]["max_length"])
        feats = {name: [] for name in out}
        for start in range(0, len(enc.labels), batch_size):
            batch = {k: v[start:start + batch_size] for k, v in enc.inputs.items()}
            query = encoder.query(batch)
            tokens = pool(query)
            feats["query"].append(query)
            feats["l2p prompts"].append(encoder.prompted(batch, tokens, pooling="prompts"))
            feats["l2p cls+prompts"].append(encoder.prompted(batch, tokens, pooling="cls+prompts"))
        for name in out:
            out[name].append(torch.cat(feats[name]).double())
        labels[split] = enc.labels
    return {"features": out, "labels": labels, "classes": classes}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lorm.analysis.prompt_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="resolved experiment config (results/config/*.yaml)")
    parser.add_argument("--dataset", required=True, help="prepared text Dataset (results/data/*/dataset.json)")
    parser.add_argument("--seed", type=int, default=0, help="run seed of L2P's pool initialisation (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    from lorm.config import load_config
    from lorm.data.datasets import load_dataset

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dataset = load_dataset(args.dataset)
    if dataset.get("modality") != "text":
        parser.error(f"--dataset {args.dataset}: a text dataset is needed (this one is {dataset.get('modality')})")
    result = prompt_features(cfg, dataset, args.seed)
    (train_y, test_y), rows = (result["labels"]["train"], result["labels"]["test"]), {}
    for name, (train_x, test_x) in result["features"].items():
        rows[name] = {"probe_accuracy": round(linear_probe(train_x, train_y, test_x, test_y, result["classes"]), 2),
                      "mean_pairwise_cosine": round(mean_pairwise_cosine(test_x), 4)}
    print(json.dumps({"classes": result["classes"], "train": len(train_y), "test": len(test_y),
                      "chance": round(100 / result["classes"], 2), "features": rows}, indent=1))


if __name__ == "__main__":
    main()
