"""The whole bot on the Gemma 3 and Qwen2.5-VL shaped tiny pairs, against the fake Discord:
a question with several images, a follow-up from the cache, and /status naming the template."""

from __future__ import annotations

import contextlib

import pytest

from bot.testing.fake_discord import ALICE_ID, BOT_ID, GENERAL_ID, OWNER_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, ref
from tests.helpers import jpeg_bytes, picture

END_OF_TURN = {"gemma3": "<end_of_turn>", "qwen2.5vl": "<|im_end|>"}


@pytest.fixture(params=sorted(END_OF_TURN))
async def family_bot(request: pytest.FixtureRequest, fake: FakeDiscord, private_cache, tmp_path, monkeypatch):
    from bot.engine.tiny import FAMILY_SHAPES, ensure_model_pair
    from bot.testing.harness import running_bot

    monkeypatch.chdir(tmp_path)
    pair = ensure_model_pair(FAMILY_SHAPES[request.param], private_cache)
    async with contextlib.AsyncExitStack() as stack:
        bot, runtime = await stack.enter_async_context(
            running_bot(fake, pair, tmp_path, generation={"max_tokens": 64, "max_tokens_limit": 64})
        )
        yield request.param, runtime


def answer_text(record: dict) -> str:
    return record["content"].split("\n-# ")[0]


async def test_several_images_then_a_follow_up(fake: FakeDiscord, family_bot) -> None:
    family, runtime = family_bot
    atts = [fake.add_attachment(f"{i}.jpg", jpeg_bytes(picture(colour=c))) for i, c in enumerate([(200, 40, 40), (40, 200, 40)])]
    asked = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is this?", attachments=atts, mentions_bot=True)
    def both_final() -> list[dict] | None:
        got = [{**r, "content": fake.messages[r["id"]]["content"]} for r in fake.created_in(GENERAL_ID) if ref(r) == asked["id"]]
        return got if len(got) == 2 and all(FOOTER.search(r["content"]) for r in got) else None

    replies = await fake.wait_until(both_final, timeout=15, what="both answers final")
    for reply in replies:
        assert FOOTER.search(reply["content"]), reply["content"]
        assert answer_text(reply) and END_OF_TURN[family] not in reply["content"]
    follow = await fake.user_message(ALICE_ID, GENERAL_ID, "and what colour is it?", reference_message_id=replies[-1]["id"])
    second = await fake.wait_for_final(lambda s: ref(s) == follow["id"])
    assert FOOTER.search(second["content"]) and END_OF_TURN[family] not in second["content"]
    assert "image 0.00 s" in second["content"]  # the image came from the prefix cache
    assert runtime.queue.stats().served == 3


async def test_status_names_the_template_from_the_model_file(fake: FakeDiscord, family_bot) -> None:
    asked = await fake.slash_command(OWNER_ID, GENERAL_ID, "status")
    shown = await fake.wait_for_callback(lambda c: c["interaction_id"] == asked.id)
    assert "chat template: the model file's own template (tokenizer.chat_template)" in shown["data"]["content"]
