from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model import prepare as model_prepare
from reflexa.agent.model.prepare import (
    MARKER,
    bundled_gguf,
    file_sha256,
    prepare_model,
    validate_model_dir,
)
from tests.helpers import make_model_dir


def test_valid_folder_passes(tmp_path: Path) -> None:
    validate_model_dir(make_model_dir(tmp_path / "m"))


def _corrupt_weights(path: Path, data: bytes) -> None:
    (path / "model.safetensors").write_bytes(data)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: (p / "config.json").unlink(), "no config.json"),
        (lambda p: (p / "config.json").write_text("{not json"), "config.json: corrupt"),
        (lambda p: (p / "config.json").write_text("{}"), "no architectures"),
        (lambda p: (p / "model.safetensors").unlink(), "no \\*.safetensors"),
        (lambda p: _corrupt_weights(p, b"abc"), "truncated header"),
        (lambda p: _corrupt_weights(p, struct.pack("<Q", 1 << 40)), "bad header length"),
        (lambda p: _corrupt_weights(p, struct.pack("<Q", 4) + b"{{{{"), "unreadable header"),
        (lambda p: _corrupt_weights(p, struct.pack("<Q", 2) + b"[]"), "malformed header"),
        (lambda p: (p / "tokenizer.json").unlink(), "no tokenizer"),
    ],
)
def test_broken_folder_is_refused(tmp_path: Path, spoil, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make_model_dir(tmp_path / "m")
    spoil(path)
    with pytest.raises(ReflexaError, match=message):
        validate_model_dir(path)


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    path = make_model_dir(tmp_path / "m")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ReflexaError, match="shorter than its tensors"):
        validate_model_dir(path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ReflexaError, match=r"model folder not found.*reflexa model prepare"):
        validate_model_dir(tmp_path / "absent")


def test_bundled_gguf_ships_in_the_package() -> None:
    gguf = bundled_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    return path


def test_prepare_converts_once_then_reuses(
    tmp_path: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def convert(gguf: Path, out: Path) -> float:
        calls.append(gguf)
        make_model_dir(out)
        return 0.0

    monkeypatch.setattr(model_prepare, "_convert", convert)
    dest = tmp_path / "models" / "m"
    first = prepare_model(dest, fake_gguf)
    second = prepare_model(dest, fake_gguf)
    assert calls == [fake_gguf]
    assert (first.reused, second.reused) == (False, True)
    marker = json.loads((dest / MARKER).read_text())
    assert marker["source_sha256"] == file_sha256(fake_gguf)

    fake_gguf.write_bytes(b"GGUF another model")  # a different source is converted again
    assert not prepare_model(dest, fake_gguf).reused
    assert len(calls) == 2


def test_failed_conversion_leaves_nothing(
    tmp_path: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def convert(gguf: Path, out: Path) -> float:
        make_model_dir(out)
        raise RuntimeError("killed half way")

    monkeypatch.setattr(model_prepare, "_convert", convert)
    dest = tmp_path / "models" / "m"
    with pytest.raises(RuntimeError):
        prepare_model(dest, fake_gguf)
    assert list((tmp_path / "models").iterdir()) == []


def test_logit_mismatch_is_refused(
    tmp_path: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_prepare, "_convert", lambda g, out: make_model_dir(out) and 0.5)
    dest = tmp_path / "models" / "m"
    with pytest.raises(ReflexaError, match=r"logits differ by 0\.5"):
        prepare_model(dest, fake_gguf)
    assert not dest.exists()
