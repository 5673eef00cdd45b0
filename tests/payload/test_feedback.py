"""Feedback parsing, joining and live quality on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import BadRequest
from serving.payload.feedback import FeedbackBook, Item, Quality, parse
from serving.payload.record import Answer, answer, prediction


def capture(outputs: dict[str, np.ndarray], rid: str = "r1", version: str = "1",
            route: str = "primary", t: float = 100.0) -> Answer:
    return answer(rid, t, "m", version, route, outputs)


def test_single_and_batch_forms() -> None:
    items, batch = parse(b'{"id": "a", "truth": 2}')
    assert not batch and isinstance(items[0], Item) and items[0].truth == [2]
    items, batch = parse(b'{"feedback": [{"id": "a", "truth": [1, 0]}, {"id": 3}]}')
    assert batch and isinstance(items[0], Item) and items[0].truth == [1, 0]
    assert isinstance(items[1], BadRequest)


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'{"id": "", "truth": 1}', b'{"id": "a"}', b'{"id": "a", "truth": []}',
    b'{"id": "a", "truth": null}', b'{"id": "a", "truth": {"x": 1}}', b'{"feedback": []}',
    b'{"feedback": 3}', b'{"id": "a", "truth": 1e999}',
], ids=lambda b: b.decode()[:30])
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse(body)


def test_prediction_prefers_the_label_output() -> None:
    kind, values = prediction({"probabilities": np.zeros((2, 3), np.float32),
                               "label": np.array([1, 2], np.int64)}) or ("", None)
    assert kind == "class" and values.tolist() == [1, 2]
    kind, values = prediction({"variable": np.array([[1.5], [2.0]], np.float32)}) or ("", None)
    assert kind == "value" and values.tolist() == [1.5, 2.0]


def test_join_counts_accuracy_precision_recall_and_delay() -> None:
    book = FeedbackBook()
    labels = ("setosa", "versicolor", "virginica")
    primary = capture({"label": np.array([0, 1], np.int64)})
    shadow = capture({"label": np.array([0, 2], np.int64)}, version="2", route="shadow")
    assert book.apply(Item("r1", [0, "versicolor"]), [primary, shadow], labels, 160.0, 10) is None
    p, s = book.quality[("m", "1", "primary")], book.quality[("m", "2", "shadow")]
    assert (p.rows, p.correct, s.rows, s.correct) == (2, 2, 2, 1)
    summary = s.summary()
    assert summary["accuracy"] == 0.5
    assert summary["classes"]["2"] == {"precision": 0.0, "recall": None}
    assert summary["classes"]["1"] == {"precision": None, "recall": 0.0}
    assert book.delay["m"].counts[2] == 1  # 60 s: the <= 60 s bucket
    assert book.is_duplicate("m", "r1")


def test_truth_that_does_not_fit_is_refused_and_counts_nothing() -> None:
    book = FeedbackBook()
    c = capture({"label": np.array([0, 1], np.int64)})
    assert "rows" in (book.apply(Item("r1", [0]), [c], (), 0.0, 10) or "")
    assert "does not match" in (book.apply(Item("r1", ["nope", 1]), [c], ("a",), 0.0, 10) or "")
    assert book.quality == {} and not book.is_duplicate("m", "r1")


def test_regression_window_slides() -> None:
    q = Quality("value", window=2)
    q.add([1.0], [2.0])
    q.add([5.0], [5.0])
    q.add([0.0], [3.0])
    assert q.rows == 3
    s = q.summary()
    assert s["rows"] == 2 and s["mae"] == pytest.approx(1.5)
    assert s["rmse"] == pytest.approx(np.sqrt(4.5))
