"""Decoding requests for tabular models (one input per column): shapes, datatypes, refusals."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving.errors import BadRequest
from serving.protocol import v1, v2
from serving.protocol.columns import conform
from serving.signature import Signature
from serving.types import Tensor, TensorSpec

TABULAR = Signature(
    [TensorSpec("age", "INT64", (-1, 1)), TensorSpec("income", "FP32", (-1, 1)),
     TensorSpec("colour", "BYTES", (-1, 1))],
    [TensorSpec("label", "INT64", (-1,))],
)


def _v2(*inputs: dict[str, object]) -> bytes:
    return orjson.dumps({"inputs": list(inputs)})


AGE = {"name": "age", "datatype": "INT64", "shape": [2, 1], "data": [30, 60]}
INCOME = {"name": "income", "datatype": "FP32", "shape": [2, 1], "data": [1.5, 2.5]}
COLOUR = {"name": "colour", "datatype": "BYTES", "shape": [2, 1], "data": ["red", "blue"]}


def test_the_common_case_is_returned_as_is() -> None:
    req = v2.decode_request(_v2(AGE, INCOME, COLOUR), None, TABULAR)
    again = conform(req.inputs, TABULAR)
    assert again is req.inputs


@pytest.mark.parametrize("shape", [[2], [2, 1]])
def test_columns_of_n_or_n_by_1_fit_an_n_by_1_input(shape: list[int]) -> None:
    req = v2.decode_request(_v2(dict(AGE, shape=shape), dict(INCOME, shape=shape),
                                dict(COLOUR, shape=shape)), None, TABULAR)
    feeds, rows = TABULAR.check_inputs(req.inputs)
    assert rows == 2
    assert feeds["age"].shape == (2, 1) and feeds["colour"].tolist() == [["red"], ["blue"]]


def test_n_by_1_fits_an_n_input() -> None:
    sig = Signature([TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "BYTES", (-1,))],
                    [TensorSpec("y", "FP32", (-1,))])
    t = [Tensor("a", "FP32", (3, 1), np.zeros(3, np.float32)),
         Tensor("b", "BYTES", (3, 1), np.array(["x", "y", "z"], dtype=object))]
    assert [x.shape for x in conform(t, sig)] == [(3,), (3,)]


def test_numbers_are_converted_to_the_column_datatype() -> None:
    req = v2.decode_request(_v2(dict(AGE, datatype="INT32"), dict(INCOME, datatype="FP64"),
                                COLOUR), None, TABULAR)
    assert [t.datatype for t in req.inputs] == ["INT64", "FP32", "BYTES"]
    assert req.inputs[1].data.dtype == np.float32


@pytest.mark.parametrize(("inputs", "message"), [
    pytest.param([dict(AGE, datatype="BYTES", data=["30", "60"]), INCOME, COLOUR],
                 "column 'age': expected INT64, got BYTES", id="string-for-int"),
    pytest.param([AGE, INCOME, dict(COLOUR, datatype="FP32", data=[1.0, 2.0])],
                 "column 'colour': expected BYTES, got FP32", id="number-for-string"),
    pytest.param([dict(AGE, datatype="FP64", data=[30.5, 60.0]), INCOME, COLOUR],
                 "column 'age': expected INT64, got FP64", id="fraction-for-int"),
    pytest.param([AGE, dict(INCOME, shape=[3, 1], data=[1, 2, 3]), COLOUR],
                 "ragged columns: 'age' has 2 rows but 'income' has 3", id="ragged"),
    pytest.param([AGE, COLOUR], "missing input 'income'; this model takes columns age, "
                 "income, colour", id="missing"),
    pytest.param([AGE, INCOME, COLOUR, dict(AGE, name="height")], "unknown input 'height'",
                 id="extra"),
    pytest.param([AGE, INCOME, COLOUR, AGE], "column 'age' is given more than once",
                 id="twice"),
])
def test_bad_columns_are_named(inputs: list[dict[str, object]], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        v2.decode_request(_v2(*inputs), None, TABULAR)


def test_single_input_models_keep_their_checks() -> None:
    """Conversions are for tabular models: a one-input model still refuses FP64 for FP32."""
    sig = Signature([TensorSpec("input", "FP32", (-1, 4))], [TensorSpec("y", "FP32", (-1,))])
    t = [Tensor("input", "FP64", (1, 4), np.zeros(4))]
    assert conform(t, sig)[0].datatype == "FP64"
    with pytest.raises(BadRequest, match="expected datatype FP32, got FP64"):
        sig.check_inputs(conform(t, sig))


def test_v1_rows_and_columns_with_strings() -> None:
    rows = orjson.dumps({"instances": [{"age": 30, "income": 1.5, "colour": "red"},
                                       {"age": 60, "income": 2.5, "colour": "blue"}]})
    cols = orjson.dumps({"inputs": {"age": [30, 60], "income": [1.5, 2.5],
                                    "colour": ["red", "blue"]}})
    for body in (rows, cols):
        req, _ = v1.decode_request(body, TABULAR)
        feeds, n = TABULAR.check_inputs(req.inputs)
        assert n == 2 and feeds["colour"].ravel().tolist() == ["red", "blue"]
        assert feeds["age"].dtype == np.int64 and feeds["income"].shape == (2, 1)


@pytest.mark.parametrize(("colour", "message"), [
    (["red", 7], "column 'colour': expected BYTES (strings), got int"),
    (["red", ["a", "b"]], "ragged"),
])
def test_v1_string_columns_refuse_other_values(colour: list[object], message: str) -> None:
    body = orjson.dumps({"inputs": {"age": [30, 60], "income": [1.5, 2.5], "colour": colour}})
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        v1.decode_request(body, TABULAR)


@pytest.mark.parametrize("rows", [2, 200], ids=["small-body", "split-body"])
def test_nulls_in_a_float_column_are_nan_and_meet_the_nan_policy(rows: int) -> None:
    """MLServer's pandas codec sends a DataFrame's NaN as null: NaN for the model, which the
    default policy then refuses by name (a model with allow_nonfinite takes it)."""
    n = rows
    income = [None if i % 2 else 1.5 for i in range(n)]
    body = _v2(dict(AGE, shape=[n, 1], data=list(range(n))),
               dict(INCOME, shape=[n, 1], data=income),
               dict(COLOUR, shape=[n, 1], data=["red"] * n))
    req = v2.decode_request(body, None, TABULAR)
    got = req.inputs[1].data
    assert got.dtype == np.float32 and np.isnan(got[1]) and got[0] == 1.5
    with pytest.raises(BadRequest, match="input 'income' contains NaN"):
        TABULAR.check_inputs(req.inputs)
    feeds, _ = TABULAR.check_inputs(req.inputs, allow_nonfinite=True)
    assert np.isnan(feeds["income"][1, 0])


@pytest.mark.parametrize("data", [[None, "x"], [None, True], [None, [1.0]]])
def test_nulls_do_not_open_the_door_to_other_values(data: list[object]) -> None:
    with pytest.raises(BadRequest, match="input 'income'"):
        v2.decode_request(_v2(AGE, dict(INCOME, data=data), COLOUR), None, TABULAR)


def test_nulls_in_an_integer_column_are_refused() -> None:
    with pytest.raises(BadRequest, match="input 'age'"):
        v2.decode_request(_v2(dict(AGE, data=[1, None]), INCOME, COLOUR), None, TABULAR)


def test_pd_json_string_columns_are_unwrapped() -> None:
    """MLServer's codec sends an object column of mixed values as JSON documents (pd_json)."""
    colour = dict(COLOUR, data=['"red"', "null"], parameters={"content_type": "pd_json"})
    req = v2.decode_request(_v2(AGE, INCOME, colour), None, TABULAR)
    assert req.inputs[2].data.tolist() == ["red", ""]
    bad = dict(colour, data=['"red"', "3"])
    with pytest.raises(BadRequest, match="column 'colour': element 1 is int '3', not a string"):
        v2.decode_request(_v2(AGE, INCOME, bad), None, TABULAR)
