"""The `tabular` example: a DataFrame pipeline served one tensor per column, answering as the
estimator does on the same DataFrame (the README's curl call)."""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pytest

from serving.packaging.examples import EXAMPLES, tabular_frame
from serving.registry.manifest import read_manifest

pytestmark = pytest.mark.e2e


def test_tabular_example_answers_as_its_estimator(models_dir, client: httpx.Client) -> None:
    m = read_manifest(models_dir / "tabular/1/manifest.json")
    assert {t.datatype for t in m.inputs} == {"FP32", "INT64", "BYTES"}
    assert [c["name"] for c in m.reference["categorical"]] == ["hue", "ash_grade"]
    df, _ = tabular_frame()
    rows = df.iloc[::20]
    inputs = []
    for t in m.inputs:
        col = rows[t.name]
        data = [str(v) for v in col] if t.datatype == "BYTES" else col.tolist()
        inputs.append({"name": t.name, "datatype": t.datatype, "shape": [len(rows), 1],
                       "data": data})
    resp = client.post("/v2/models/tabular/infer", json={"inputs": inputs})
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = next(e for e in EXAMPLES if e.name == "tabular").build()[0]
    np.testing.assert_array_equal(outs["label"], est.predict(rows))
    np.testing.assert_allclose(outs["probabilities"], est.predict_proba(rows), atol=1e-5)
