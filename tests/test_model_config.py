"""model.toml: whatever a user writes there is read or refused with a ValueError naming the
file, never a TypeError from deep inside (the manager turns a ValueError into the version's
failure reason; anything else would escape as a 500 or a crashed poll)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.model_config import ModelConfig, read_model_config


@pytest.mark.parametrize("text", [
    "[versions]\nlatest = [1]\n",
    "[versions]\nversions = 3\n",
    "[batching]\npreferred_batch_sizes = 8\n",
    '[batching]\nmax_batch_size = "lots"\n',
    "[logging]\nrouting_keys = 5\n",
    "[batching]\nno_such_key = 1\n",
    "[nonsense]\n",
    "[batching\n",
])
def test_a_wrong_model_toml_is_a_value_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "model.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"model\.toml|unknown"):
        read_model_config(path)


def test_a_good_model_toml_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text("[batching]\nmax_batch_size = 32\npreferred_batch_sizes = [8, 16]\n")
    cfg = read_model_config(path)
    assert cfg.batching.max_batch_size == 32 and cfg.batching.preferred_batch_sizes == (8, 16)
    assert read_model_config(tmp_path / "absent.toml") == ModelConfig()
