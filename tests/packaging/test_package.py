"""`serving package`: every example estimator type and a Pipeline become checked, served-ready
versions; bad inputs are refused with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pytest

from serving.packaging.examples import EXAMPLES
from serving.packaging.package import PackageError, package
from serving.registry.layout import Layout
from serving.registry.manifest import read_manifest, sha256_file

pytestmark = pytest.mark.e2e  # trains models and runs the CLI in processes (the slow lane)

Estimators = dict[str, tuple[Path, np.ndarray, object]]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def estimators(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, object]]:
    """The example estimators plus a preprocessing Pipeline, dumped with joblib."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("estimators")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ex in EXAMPLES:
            est, x, *_ = ex.build()
            path = root / f"{ex.name}.joblib"
            joblib.dump(est, path)
            out[ex.name] = (path, x, est)
        wine = load_wine()
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        pipe.fit(wine.data, wine.target)
    path = root / "wine.joblib"
    joblib.dump(pipe, path)
    out["wine"] = (path, wine.data.astype(np.float32), pipe)
    return out


@pytest.mark.parametrize("name", ["iris", "forest", "digits", "diabetes", "wine"])
def test_package_each_estimator_type(estimators, tmp_path: Path, name: str) -> None:
    path, x, est = estimators[name]
    samples = tmp_path / "x.npy"
    np.save(samples, x[:100])
    result = package(path, name, tmp_path / "reg", sample_data=samples, metadata={"team": "ds"})
    assert result.published and result.version == 1
    assert result.parity["passed"] and result.parity["rows"] == 100
    vdir = Layout(tmp_path / "reg").version_dir(name, 1)
    m = read_manifest(vdir / "manifest.json")
    assert m.sha256 == sha256_file(vdir / "model.onnx")
    assert m.metadata == {"team": "ds"}
    assert m.source["sha256"] and m.source["estimator"] == type(est).__name__
    assert set(m.framework) >= {"scikit-learn", "skl2onnx", "onnxruntime", "numpy"}
    sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x[:10].astype(np.float32)})[0]
    np.testing.assert_allclose(np.ravel(got), np.ravel(est.predict(x[:10])), rtol=1e-4,
                               atol=1e-3)
    # a second package is the next version; the first is untouched
    assert package(path, name, tmp_path / "reg", sample_data=samples).version == 2
    assert read_manifest(vdir / "manifest.json").sha256 == m.sha256


def test_cli_package_generated_data_and_models_list(estimators, tmp_path: Path) -> None:
    path = estimators["wine"][0]
    reg = tmp_path / "reg"
    r = _cli("package", str(path), "--name", "wine", "--registry", str(reg),
             "--meta", "owner=alice")
    assert r.returncode == 0, r.stderr
    assert "parity on 256 rows (generated)" in r.stdout
    assert "published wine version 1" in r.stdout
    listing = _cli("models", "list", "--registry", str(reg))
    assert "wine\tv1\tpublished\tin: input FP32[-1, 13]" in listing.stdout
    show = _cli("models", "show", "wine", "--registry", str(reg))
    assert "metadata  owner=alice" in show.stdout


def test_parity_failure_is_refused_unless_overridden(estimators, tmp_path: Path) -> None:
    path = estimators["digits"][0]
    reg = tmp_path / "reg"
    r = _cli("package", str(path), "--name", "digits", "--registry", str(reg),
             "--tolerance", "0")
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "not published" in r.stderr
    assert not (reg / "digits").exists() or Layout(reg).versions("digits") == []
    r = _cli("package", str(path), "--name", "digits", "--registry", str(reg),
             "--tolerance", "0", "--allow-parity-failure")
    assert r.returncode == 0, r.stderr
    m = json.loads((reg / "digits/1/manifest.json").read_text())
    assert m["parity"]["passed"] is False and m["parity"]["override"] is True


def test_unsupported_unreadable_and_mismatched_inputs_write_nothing(estimators,
                                                                    tmp_path: Path) -> None:
    from sklearn.kernel_ridge import KernelRidge

    reg = tmp_path / "reg"
    x = np.random.default_rng(0).random((20, 3))
    unsupported = tmp_path / "kr.joblib"
    joblib.dump(KernelRidge().fit(x, x[:, 0]), unsupported)
    with pytest.raises(PackageError, match="cannot convert KernelRidge to ONNX"):
        package(unsupported, "kr", reg)
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(PackageError, match=r"cannot read garbage\.joblib"):
        package(garbage, "g", reg)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 7)))
    with pytest.raises(PackageError, match="sample data has 7 columns but the model takes 4"):
        package(estimators["iris"][0], "iris", reg, sample_data=wrong)
    with pytest.raises(PackageError, match="no such file"):
        package(tmp_path / "missing.joblib", "m", reg)
    assert not reg.exists() or not any(reg.iterdir())
    r = _cli("package", str(unsupported), "--name", "kr", "--registry", str(reg))
    assert r.returncode == 1 and "cannot convert KernelRidge" in r.stderr
    r = _cli("package", str(estimators["iris"][0]), "--name", "../evil", "--registry", str(reg))
    assert r.returncode == 1 and "invalid model name" in r.stderr
    assert not reg.exists() or not any(reg.iterdir())


def test_onnx_file_is_packaged_as_is(tmp_path: Path, models_dir: Path) -> None:
    onnx_path = models_dir / "iris/1/model.onnx"
    result = package(onnx_path, "iris-copy", tmp_path / "reg")
    assert result.published and result.parity["checked"] is False
    m = read_manifest(tmp_path / "reg/iris-copy/1/manifest.json")
    assert m.sha256 == sha256_file(onnx_path)


def test_crash_mid_publish_leaves_the_registry_readable(estimators, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    path = estimators["iris"][0]
    assert package(path, "iris", reg).version == 1
    # What a killed publisher leaves behind: a half-written temporary directory.
    leftover = reg / "iris" / ".tmp-crashed"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half a mod")
    # And a publisher that fails while renaming: its temp dir is removed.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from serving.packaging import package as p\n"
        "def boom(*a, **k): raise OSError('disk on fire')\n"
        "os.rename = boom\n"
        f"p.package(Path({str(path)!r}), 'iris', Path({str(reg)!r}))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode != 0 and "disk on fire" in r.stderr
    assert Layout(reg).versions("iris") == [1]
    assert sorted(p.name for p in (reg / "iris").iterdir()) == [".tmp-crashed", "1", "model.toml"]
    assert package(path, "iris", reg).version == 2


@pytest.mark.parametrize("header", [None, "a,b,c,d", "sepal length,1e3,x,y"])
def test_csv_sample_data_keeps_every_row(estimators: Estimators, tmp_path: Path,
                                         header: str | None) -> None:
    """A header is a first line with a field that is not a number; `1e-01` is a number."""
    path, x, _ = estimators["iris"]
    csv = tmp_path / "x.csv"
    np.savetxt(csv, x[:54], delimiter=",", header=header or "", comments="")
    if header is None:  # savetxt writes an empty first line for header=""; drop it
        csv.write_text(csv.read_text().lstrip("\n"))
    assert "e+00" in csv.read_text()  # scientific notation, as numpy.savetxt writes it
    result = package(path, "iris", tmp_path / "reg", sample_data=csv)
    assert result.parity["rows"] == 54


def test_onnx_file_with_sample_data_gets_a_reference_profile(tmp_path: Path,
                                                             models_dir: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 7, (40, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = package(models_dir / "iris/1/model.onnx", "iris-copy", tmp_path / "reg",
                     sample_data=tmp_path / "x.npy")
    assert result.published
    m = read_manifest(tmp_path / "reg/iris-copy/1/manifest.json")
    assert m.reference["rows"] == 40 and m.reference["input"] == "input"
    assert len(m.reference["features"]) == 4 and "label" in m.reference["outputs"]
    np.save(tmp_path / "wide.npy", np.zeros((5, 7), np.float32))
    with pytest.raises(PackageError, match="sample data has 7 columns but the model takes 4"):
        package(models_dir / "iris/1/model.onnx", "iris-copy", tmp_path / "reg",
                sample_data=tmp_path / "wide.npy")


@pytest.mark.parametrize("source", ["onnx", "joblib"])
def test_unsupported_sample_data_format_names_the_supported_ones(
    estimators: Estimators, tmp_path: Path, models_dir: Path, source: str
) -> None:
    data = tmp_path / "data.json"
    data.write_text("[[5.1, 3.5, 1.4, 0.2]]")
    model = models_dir / "iris/1/model.onnx" if source == "onnx" else estimators["iris"][0]
    r = _cli("package", str(model), "--name", "iris", "--registry", str(tmp_path / "reg"),
             "--sample-data", str(data))
    assert r.returncode == 1
    assert "data.json" in r.stderr and ".npy" in r.stderr and ".csv" in r.stderr, r.stderr
    assert "columns" not in r.stderr and "Warning" not in r.stderr
    assert not (tmp_path / "reg").exists()
