"""Runtime: the whole model side (prepare -> queue -> engine) without Discord."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.images import ImageError
from bot.runtime import Runtime, resolve_model
from tests.helpers import jpeg_bytes


@pytest.fixture
async def runtime(tiny_pair):
    settings = load_settings(
        overrides={
            "model": {"path": str(tiny_pair[0]), "mmproj": str(tiny_pair[1]), "n_ctx": 2048, "n_gpu_layers": 0},
            "generation": {"max_tokens": 12, "max_tokens_limit": 20, "max_question_chars": 50},
        }
    )
    rt = Runtime(settings)
    await rt.start()
    yield rt
    await rt.close()


async def test_ask_answers_with_timings(runtime: Runtime) -> None:
    answer = await runtime.ask(jpeg_bytes(), "What is this?", user_id=1)
    assert answer.text
    assert 1 <= answer.completion_tokens <= 12 + 4
    assert answer.timings.queue_wait_s >= 0 and answer.timings.total_s > 0
    assert runtime.queue.stats().served == 1


async def test_request_clamps_and_defaults(runtime: Runtime) -> None:
    prepared = await runtime.prepare(jpeg_bytes())
    req = runtime.request([prepared], "   ", max_tokens=10**6)
    assert req.question == "Describe this image."
    assert req.max_tokens == 20
    long = runtime.request([prepared], "x" * 10_000)
    assert len(long.question) <= 51 and long.question.endswith("…")
    assert runtime.request([prepared], "hi").max_tokens == 12
    assert req.images[0].startswith("data:image/jpeg;base64,")


async def test_bad_image_is_refused_before_the_queue(runtime: Runtime) -> None:
    with pytest.raises(ImageError, match="that file is not an image"):
        await runtime.ask(b"%PDF-1.7\n...", "what?")
    assert runtime.queue.stats().served == 0
    assert (await runtime.ask(jpeg_bytes())).text  # the next job still works


def test_builtin_model_is_the_default(caplog, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no config/bot.toml
    files = resolve_model(load_settings())
    assert files.builtin and files.path.is_file() and files.mmproj.is_file()
    assert "built-in tiny random model" in caplog.text


def test_max_side_follows_the_projector_unless_set() -> None:
    from bot.engine.projector import Projector
    from bot.runtime import image_limits

    llava15 = Projector("mlp", image_size=336)
    assert image_limits(load_settings(), llava15).max_side == 672
    assert image_limits(load_settings(), Projector("mlp", image_size=336, grid_pinpoints=True)).max_side == 1344
    assert image_limits(load_settings(), Projector("gemma3", image_size=896)).max_side == 1344
    qwen = Projector("qwen2.5vl_merger", patch_size=14)
    assert image_limits(load_settings(), qwen).max_side == 896  # 1024 tokens of 28 px
    assert image_limits(load_settings(overrides={"images": {"max_image_tokens": 256}}), qwen).max_side == 448
    assert image_limits(load_settings()).max_side == 1344  # no local model: the server sizes images
    assert image_limits(load_settings(overrides={"images": {"max_side": 500}}), llava15).max_side == 500


def test_the_projector_is_read_from_the_mmproj_file() -> None:
    from bot.engine.projector import read_projector
    from bot.engine.tiny import BENCH, ensure_model_pair

    projector = read_projector(ensure_model_pair(BENCH, load_settings().cache_dir)[1])
    assert (projector.kind, projector.image_size, projector.patch_size) == ("mlp", 336, 14)
    assert not projector.dynamic and not projector.tiles
