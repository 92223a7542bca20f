"""Byte accounting, the symmetric packing of the head Gram, and the continual-learning metrics."""

import pytest
import torch

from lorm.federated.comm import CommLedger, pack_symmetric, payload_bytes, unpack_symmetric
from lorm.metrics import average_forgetting, final_average_accuracy_weighted, summarise


def test_payload_bytes_counts_every_tensor_and_scalar():
    payload = {"a": torch.zeros(3, 4), "b": {"c": torch.zeros(5, dtype=torch.float64)}, "n": 7, "none": None}
    assert payload_bytes(payload) == 3 * 4 * 4 + 5 * 8 + 8
    with pytest.raises(TypeError):
        payload_bytes({"x": "a string"})


def test_ledger_separates_round_and_end_of_task_traffic():
    ledger = CommLedger()
    for _ in range(4):
        ledger.download({"w": torch.zeros(10)})
        ledger.upload({"w": torch.zeros(5)})
    ledger.upload({"g": torch.zeros(100)}, kind="end_of_task")
    s = ledger.summary()
    assert s["client_rounds"] == 4
    assert s["upload_bytes_per_client_round"] == 20 and s["download_bytes_per_client_round"] == 40
    assert s["upload_bytes_total"] == 4 * 20 + 400


def test_symmetric_packing_round_trip_and_size():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g)
    gram = x.T @ x
    gram = (gram + gram.T) / 2  # exactly symmetric (a float32 product need not be)
    packed = pack_symmetric(gram)
    assert packed.numel() == 7 * 8 // 2
    torch.testing.assert_close(unpack_symmetric(packed, 7), gram, rtol=0, atol=0)


def test_forgetting_and_weighted_accuracy_by_hand():
    matrix = [[90.0], [70.0, 80.0], [60.0, 75.0, 50.0]]
    # forgetting of tasks 0 and 1: (90 - 60) and (80 - 75)
    assert average_forgetting(matrix, [0, 1, 2]) == pytest.approx((30 + 5) / 2)
    assert final_average_accuracy_weighted([60.0, 75.0, 50.0], [10, 30, 60]) == pytest.approx(
        (600 + 2250 + 3000) / 100)
    s = summarise(matrix, [0, 1, 2], [10, 30, 60])
    assert s["final_avg_accuracy"] == pytest.approx(185 / 3)
    assert average_forgetting([[50.0, 60.0]], [1]) is None  # evaluated once (joint): undefined


def test_predict_returns_rows_in_the_given_order_despite_length_sorting():
    """Evaluation visits text rows sorted by length; the correctness vector must still follow the input order."""
    import numpy as np

    from lorm.data.tensors import EncodedSplit
    from lorm.federated.training import Runtime, predict

    lengths = torch.tensor([5, 2, 7, 3, 1, 6])
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    data = EncodedSplit("text", {"input_ids": torch.ones(6, 8, dtype=torch.long), "attention_mask": mask},
                        labels=torch.tensor([0, 1, 0, 1, 0, 1]))

    class ByLength(torch.nn.Module):  # predicts class 1 exactly for sequences longer than 4 tokens
        def forward(self, inputs):
            long = (inputs["attention_mask"].sum(1) > 4).float()
            return torch.stack([1 - long, long], 1)

    rows = np.array([3, 0, 5, 1])
    out = predict(ByLength(), data, rows, 2, Runtime(torch.device("cpu"), eval_batch_size=2))
    expected = [(lengths[i] > 4).item() == bool(data.labels[i]) for i in rows]
    assert out.tolist() == expected
