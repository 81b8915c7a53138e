"""The optional LLM label parser loads safetensors weights only: a folder with pickled weights is refused with a
message, before transformers is asked to load anything."""
from __future__ import annotations

import pytest

from pila.labels.llm import LLMParser, check_safetensors_dir


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(OSError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors"):
        LLMParser(str(tmp_path))


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OSError, match="no .safetensors weights"):
        check_safetensors_dir(tmp_path)
    with pytest.raises(OSError, match="does not exist"):
        check_safetensors_dir(tmp_path / "missing")


def test_safetensors_weights_pass_the_check(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")  # ignored: transformers is told use_safetensors=True
    check_safetensors_dir(tmp_path)
