"""TARGET (baselines2-spec section 5): the clients' distillation, the synthetic targets, the generators' input
spaces, the student's re-initialisation, and end-to-end runs (tiny ViT, MiniLM) with the synthetic-set ledger and
a resume after a crash. Synthesis settings are shrunk through the config (a few rounds of a few steps)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.federated.simulator import run_experiment
from lorm.methods.target import TARGET, soft_cross_entropy_kd, synthetic_targets
from lorm.models.backbones import TextEncoder
from lorm.models.generators import ImageGenerator, SoftTokenGenerator, reinitialise_student

from conftest import run_until_crash, tiny_text_setup
from test_baselines import make_method, setup  # noqa: F401  (the tiny-ViT fixture of the baselines' tests)

REPO = Path(__file__).resolve().parents[1]
TINY_SYNTHESIS = {"syn_rounds": 3, "g_steps": 2, "warmup": 1, "student_kd_steps": 2, "batch_size": 4}


# ------------------------------------------------------------------------------------------------ clients


def test_client_kd_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(setup):
    algo = make_method(setup, "target")
    _, train, ranges, clients, _ = setup
    pool_gen = torch.Generator().manual_seed(3)
    algo.synthetic = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=pool_gen)
    algo.begin_task(1)  # teacher = the global model = the live model
    algo.model.eval()
    x, y = train.batch(torch.as_tensor(clients[1][0][:2]))
    loss = algo.regulariser(1, 0)(inputs=x, labels=y, features=None, logits=None)
    assert abs(float(loss.detach())) < 1e-6
    with torch.no_grad():  # an old class's logit moves: the KD notices
        algo.model.head.bias[ranges[0][0]] += 1.0
    assert float(algo.regulariser(1, 0)(inputs=x, labels=y, features=None, logits=None).detach()) > 1e-4
    assert algo.regulariser(0, 0) is None  # task 0: cross-entropy only


def test_client_kd_has_the_gradient_of_the_official_soft_cross_entropy():
    gen = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(5, 6, generator=gen, requires_grad=True), torch.randn(5, 6, generator=gen)
    kl = soft_cross_entropy_kd(student, teacher, 2.0)
    (grad_kl,) = torch.autograd.grad(kl, student)
    p_t = F.softmax(teacher / 2.0, 1)
    soft_ce = -(p_t * F.log_softmax(student / 2.0, 1)).sum(1).mean()  # spec 5.1, as fed-mammoth computes it
    (grad_ce,) = torch.autograd.grad(soft_ce, student)
    torch.testing.assert_close(grad_kl, grad_ce)
    entropy = -(p_t * p_t.log()).sum(1).mean()
    assert float(soft_ce.detach()) == pytest.approx(float(kl.detach()) + float(entropy), rel=1e-5)


# ------------------------------------------------------------------------------------------------ synthesis


def test_synthetic_targets_cover_every_seen_class_and_miss_the_newest_with_the_official_range():
    gen = torch.Generator().manual_seed(5)
    assert set(synthetic_targets(6, 2000, gen, official_class_range=False).tolist()) == set(range(6))
    assert set(synthetic_targets(6, 2000, gen, official_class_range=True).tolist()) == set(range(5))


def test_image_generator_outputs_pixels_in_the_unit_box_that_the_vit_accepts(setup):
    algo = make_method(setup, "target")
    torch.manual_seed(0)
    images = ImageGenerator(32, nz=8, ngf=4)(torch.randn(3, 8)).detach()
    assert images.shape == (3, 3, 32, 32) and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    view = algo.synthesis_view(images, torch.Generator().manual_seed(0))  # pad-crop, flip, the dataset's norm
    assert view.shape == images.shape and algo.model(view).shape == (3, setup[4])
    pooled = algo.to_pool(images)
    assert pooled.dtype == torch.uint8 and pooled.shape == (3, 32, 32, 3)
    # Q30: the dataset's own training transform on stored images; fed-mammoth's hard-coded one under official
    assert algo.image_train_transform is setup[1].train_transform
    official = make_method(setup, "target", dataset={"preprocessing": "official"})
    assert official.image_mean == official.image_std == (0.5,) * 3
    assert [s["op"] for s in official.image_train_transform.steps] == ["random_resized_crop", "horizontal_flip"]
    assert official.synthetic_inputs(pooled, 2, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)


def _tiny_bert_encoder() -> TextEncoder:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    return TextEncoder(BertModel(config).eval())


def test_soft_token_generator_outputs_convex_combinations_of_word_embeddings_the_encoder_accepts():
    encoder = _tiny_bert_encoder()
    words = encoder.bert.get_input_embeddings().weight.detach()
    torch.manual_seed(1)
    gen = SoftTokenGenerator(words, words[1], words[2], length=6, nz=8, hidden=12)
    z = torch.randn(4, 8)
    embeds = gen(z)
    assert embeds.shape == (4, 6, 16)
    dist = gen.token_distribution(z)
    assert float(dist.detach().min()) >= 0.0 and torch.allclose(dist.sum(-1), torch.ones(4, 4))
    torch.testing.assert_close(embeds[:, 1:-1], dist @ words)  # every soft row: a convex combination of E's rows
    torch.testing.assert_close(embeds[:, 0], words[1].expand(4, -1))  # [CLS] first, [SEP] last
    torch.testing.assert_close(embeds[:, -1], words[2].expand(4, -1))
    mask = torch.ones(4, 6, dtype=torch.long)
    features = encoder({"inputs_embeds": embeds, "attention_mask": mask})
    assert features.shape == (4, 16)
    features.sum().backward()  # the encoder passes gradients back to the generator
    assert gen.to_vocab.weight.grad is not None and float(gen.to_vocab.weight.grad.abs().sum()) > 0
    assert [n for n, _ in gen.named_parameters()] and not any(
        p is words for p in gen.parameters())  # the frozen embeddings are not a parameter


def test_student_reinitialises_linear_layers_reproducibly_and_keeps_norms_and_embeddings():
    encoder = _tiny_bert_encoder()
    a = reinitialise_student(copy.deepcopy(encoder), torch.Generator().manual_seed(7))
    b = reinitialise_student(copy.deepcopy(encoder), torch.Generator().manual_seed(7))
    for (name, p), q, r in zip(encoder.named_parameters(), a.parameters(), b.parameters()):
        assert torch.equal(q, r), name
        linear = ("dense" in name or "query" in name or "key" in name or "value" in name) and "LayerNorm" not in name
        assert torch.equal(p, q) != linear, name  # Linear weights/biases re-drawn, the rest kept
    bias = a.bert.encoder.layer[0].attention.self.query.bias
    assert 0.3 < float(bias.detach().std()) < 2.0  # N(0, 1) biases, as TARGET's weight_init


# ------------------------------------------------------------------------------------------------ end to end


def _tiny_vit_config():
    return load_config(None, {
        "experiment": "tiny-target",
        "dataset": {"name": "synthetic-images", "train_per_class": 12, "test_per_class": 4, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 3, "task_sizes": [4, 3, 3], "num_clients": 2, "rounds": 1, "local_epochs": 1,
                 "min_samples": 1},
        "target": TINY_SYNTHESIS,
        "runtime": {"threads": 1, "progress": False},
    })


@pytest.fixture(scope="module")
def vit_run():
    cfg = _tiny_vit_config()
    ds = build_dataset(cfg["dataset"])
    pools, end_task = [], TARGET.end_task

    def recording(self, task):
        end_task(self, task)
        pools.append(None if self.synthetic is None else self.synthetic.clone())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TARGET, "end_task", recording)
        metrics = run_experiment(cfg, "target", seed=0, beta=0.5, dataset=ds)
    return cfg, ds, metrics, pools


def test_target_runs_end_to_end_on_the_tiny_vit_and_counts_the_synthetic_set_once_per_client_and_task(vit_run):
    cfg, ds, m, pools = vit_run
    T, K, n_pool = 3, 2, 3 * 4
    assert [len(r) for r in m["accuracy_matrix"]] == [1, 2, 3]
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    kinds = m["communication"]["by_kind"]
    assert kinds["download_synthetic"] == K * (T - 1) * n_pool * 32 * 32 * 3  # uint8 images, tasks 1 and 2
    assert "upload_synthetic" not in kinds and m["wall_time_s"]["synthesis"] > 0
    # a pool after tasks 0 and 1; none after the last task (Q29): the pool of task 1 stays
    assert pools[0].shape == (n_pool, 32, 32, 3) and pools[0].dtype == torch.uint8
    assert not torch.equal(pools[0], pools[1]) and torch.equal(pools[1], pools[2])


def test_target_resumes_after_a_crash_with_the_saved_pool_and_identical_metrics(vit_run, tmp_path, monkeypatch):
    cfg, ds, reference, pools = vit_run
    ckpt = tmp_path / "run.ckpt"
    saved = run_until_crash(TARGET, "target", cfg, ds, ckpt, monkeypatch, at_task=2)
    assert saved["next_task"] == 2 and torch.equal(saved["method_state"]["synthetic"], pools[1])
    restored = []
    load = TARGET.load_state_dict
    monkeypatch.setattr(TARGET, "load_state_dict", lambda self, s: (load(self, s), restored.append(self.synthetic)))
    resumed = run_experiment(copy.deepcopy(cfg), "target", seed=0, beta=0.5, dataset=ds, checkpoint=str(ckpt))
    assert torch.equal(restored[0], pools[1])
    assert resumed["resumed_after_task"] == 2
    for key in ("accuracy_matrix", "final_avg_accuracy", "final_avg_accuracy_weighted", "avg_forgetting",
                "communication"):
        assert resumed[key] == reference[key], key


def test_target_runs_end_to_end_on_the_text_path():
    """MiniLM + WordNet glosses: soft-token synthesis, float inputs_embeds pool, its bytes in the ledger."""
    cfg, ds = tiny_text_setup({"num_tasks": 2, "rounds": 1}, target={**TINY_SYNTHESIS, "text_length": 8})
    m = run_experiment(cfg, "target", seed=0, beta=0.5, dataset=ds)
    K, n_pool, L, d = cfg["fcil"]["num_clients"], 3 * 4, 8, 384
    assert len(m["accuracy_matrix"]) == 2 and all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    assert m["communication"]["by_kind"]["download_synthetic"] == K * 1 * n_pool * L * d * 4  # float32 embeddings
    assert m["wall_time_s"]["synthesis"] > 0
