"""The tiny random LLaVA pair: deterministic, cached, and loadable by the real stack."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from PIL import Image

from bot.engine.tiny import (
    BENCH,
    TINY,
    ModelShape,
    default_cache_dir,
    ensure_model_pair,
    write_model_pair,
)


def _kv(reader: gguf.GGUFReader, key: str) -> gguf.ReaderField:
    field = reader.get_field(key)
    assert field is not None, f"missing key {key}"
    return field


def _scalar(reader: gguf.GGUFReader, key: str) -> object:
    return _kv(reader, key).contents()


def _png_data_uri(side: int = 64) -> str:
    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_writing_is_deterministic(tmp_path: Path) -> None:
    first = write_model_pair(TINY, tmp_path / "a")
    second = write_model_pair(TINY, tmp_path / "b")
    for one, two in zip(first, second):
        assert one.name == two.name
        assert one.read_bytes() == two.read_bytes()
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_ensure_model_pair_reuses_existing_files(tmp_path: Path) -> None:
    paths = ensure_model_pair(TINY, tmp_path)
    assert all(p.is_file() and p.parent == tmp_path for p in paths)
    os.utime(paths[0], ns=(1, 1))  # make a rewrite detectable even on coarse clocks
    os.utime(paths[1], ns=(1, 1))
    again = ensure_model_pair(TINY, tmp_path)
    assert again == paths
    assert [p.stat().st_mtime_ns for p in again] == [1, 1]


def test_changed_shape_gets_new_file_names() -> None:
    changed = dataclasses.replace(TINY, seed=1)
    assert set(changed.file_names()).isdisjoint(TINY.file_names())
    assert TINY.file_names() == ModelShape(name="tiny").file_names()


def test_default_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLAVA_BOT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("LLAVA_BOT_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "llava-bot"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "llava-bot"


def test_mmproj_metadata_has_the_types_libmtmd_asserts(tmp_path: Path) -> None:
    # A wrong type here aborts the whole process inside libmtmd, so check
    # the types on disk rather than find out from a crash.
    _, mmproj = ensure_model_pair(TINY, tmp_path)
    reader = gguf.GGUFReader(mmproj)
    T = gguf.GGUFValueType
    expected = {
        "clip.projector_type": T.STRING,
        "clip.has_vision_encoder": T.BOOL,
        "clip.vision.image_size": T.UINT32,
        "clip.vision.patch_size": T.UINT32,
        "clip.vision.embedding_length": T.UINT32,
        "clip.vision.feed_forward_length": T.UINT32,
        "clip.vision.block_count": T.UINT32,
        "clip.vision.projection_dim": T.UINT32,
        "clip.vision.attention.head_count": T.UINT32,
        "clip.vision.attention.layer_norm_epsilon": T.FLOAT32,
    }
    for key, vtype in expected.items():
        assert _kv(reader, key).types == [vtype], key
    for key in ("clip.vision.image_mean", "clip.vision.image_std"):
        assert _kv(reader, key).types == [T.ARRAY, T.FLOAT32], key
        assert len(_scalar(reader, key)) == 3
    assert _scalar(reader, "clip.projector_type") == "mlp"


def test_bench_shape_metadata(tmp_path: Path) -> None:
    text_path, mmproj = write_model_pair(BENCH, tmp_path)
    clip = gguf.GGUFReader(mmproj)
    assert _scalar(clip, "clip.vision.image_size") == 336
    assert _scalar(clip, "clip.vision.patch_size") == 14
    assert BENCH.n_image_tokens == 576
    tensors = {t.name: t for t in clip.tensors}
    # ggml order: ne[0] is the row width, ne[1] the number of rows.
    assert list(tensors["v.position_embd.weight"].shape) == [BENCH.v_embd, 577]
    assert list(tensors["v.patch_embd.weight"].shape) == [14, 14, 3, BENCH.v_embd]
    assert list(tensors["mm.2.weight"].shape)[1] == BENCH.n_embd

    text = gguf.GGUFReader(text_path)
    assert _scalar(text, "llama.embedding_length") == BENCH.n_embd
    assert _scalar(text, "tokenizer.ggml.model") == "llama"


def test_tiny_pair_answers_an_image_question(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    text_path, mmproj = ensure_model_pair(TINY, tmp_path)
    handler = Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = Llama(
        model_path=str(text_path),
        chat_handler=handler,
        n_ctx=2048,
        n_gpu_layers=0,
        seed=0,
        verbose=False,
    )
    max_tokens = 16
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _png_data_uri()}},
                {"type": "text", "text": "What is in this image?"},
            ],
        }
    ]
    try:
        result = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
        again = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
    finally:
        llm.close()

    usage = result["usage"]
    assert 1 <= usage["completion_tokens"] <= max_tokens + 4
    assert usage["prompt_tokens"] > TINY.n_image_tokens
    assert isinstance(result["choices"][0]["message"]["content"], str)
    # Greedy decoding of a fixed model is repeatable.
    assert again["choices"][0]["message"]["content"] == result["choices"][0]["message"]["content"]
