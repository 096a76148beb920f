"""Answers in the asker's language, end to end: the real discord.py client and the
tiny model against the fake Discord, interactions sent with a chosen ``locale``."""

from __future__ import annotations

import re
from pathlib import Path

from bot.jobs.journal import Journal
from bot.jobs.spec import ImageSource, JobSpec
from bot.testing.fake_discord import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, record_requests, ref, settled
from tests.helpers import jpeg_bytes

#: the footer as the bot writes it in French: its words, and decimal commas
FRENCH_FOOTER = re.compile(
    r"\n-# ⏱ attente \d+,\d\d s · image \d+,\d\d s · invite \d+,\d\d s · \d+ jetons à [\d,]+ jetons/s · total \d+,\d\d s$"
)
GERMAN_FOOTER = re.compile(r"\n-# ⏱ Warten \d+,\d\d s · Bild \d+,\d\d s · Prompt \d+,\d\d s · \d+ Token @ [\d,]+ Token/s · gesamt \d+,\d\d s$")


async def test_a_french_slash_command_is_answered_with_french_lines(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("photo.jpg", jpeg_bytes())
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": att, "question": "Qu'est-ce que c'est ?"}, locale="fr")
    answer = await fake.wait_for_final(lambda s: s.get("original"))
    assert FRENCH_FOOTER.search(answer["content"]), answer["content"]
    assert not FOOTER.search(answer["content"])  # no English word left in it
    assert seen[0].question == "Qu'est-ce que c'est ?\nAnswer in French."  # the model is asked to answer in French

    # a refusal: a file that is no picture, in French too
    notes = fake.add_attachment("notes.txt", b"just some notes\n", content_type="text/plain")
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": notes, "question": "Et ça ?"}, locale="fr")
    refusal = await fake.wait_for_final(lambda s: s.get("original") and s["id"] != answer["id"])
    assert refusal["content"] == "⚠️ Ce fichier n'est pas une image."
    assert len(seen) == 1  # never reached the model


async def test_a_menu_refusal_and_a_caption_follow_the_askers_locale(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    plain = await fake.user_message(ALICE_ID, GENERAL_ID, "no picture here")
    it = await fake.message_context_menu(ALICE_ID, GENERAL_ID, "Describe image", plain["id"], locale="de")
    callback = await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert callback["data"]["content"] == "⚠️ Diese Nachricht hat kein Bild."  # ephemeral, in German

    att = fake.add_attachment("a.jpg", jpeg_bytes())
    await fake.slash_command(ALICE_ID, GENERAL_ID, "caption", {"image": att}, locale="pt-BR")
    caption = await fake.wait_for_final(lambda s: s.get("original"))
    assert "\n-# ⏱ fila " in caption["content"] and " tokens/s · total " in caption["content"], caption["content"]
    assert seen[0].question.endswith("\nAnswer in Brazilian Portuguese.")


async def test_a_mention_in_a_german_server_gets_german_lines(fake: FakeDiscord, llava) -> None:
    fake.guild["preferred_locale"] = "de"  # the server's language (a mention carries no locale)
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("house.jpg", jpeg_bytes())
    question = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> was ist das?", attachments=[att], mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: ref(s) == question["id"])
    assert GERMAN_FOOTER.search(reply["content"]), reply["content"]
    # the model answers in the language of the question, whatever the server's
    assert seen[0].question == "was ist das?\nAnswer in the language of the question."

    bare = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> und das?", mentions_bot=True)
    refusal = await fake.wait_for_final(lambda s: ref(s) == bare["id"])
    assert refusal["content"] == (
        "⚠️ Häng ein Bild an (oder antworte auf eine Nachricht mit einem) und erwähne mich mit deiner Frage."
    )


async def test_a_locale_without_a_catalog_gets_english_lines(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("photo.jpg", jpeg_bytes())
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": att, "question": "무엇인가요?"}, locale="ko")
    answer = await fake.wait_for_final(lambda s: s.get("original"))
    assert FOOTER.search(answer["content"]), answer["content"]  # English lines, never keys
    assert seen[0].question == "무엇인가요?\nAnswer in Korean."  # but the model still answers in Korean

    notes = fake.add_attachment("notes.txt", b"just some notes\n", content_type="text/plain")
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": notes, "question": "?"}, locale="xx-YY")
    refusal = await fake.wait_for_final(lambda s: s.get("original") and s["id"] != answer["id"])
    assert refusal["content"] == "⚠️ That file is not an image."
    await settled(fake, bot)


async def test_one_fixed_language_for_every_answer(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(generation={"language": "ja"})
    seen = record_requests(runtime)
    att = fake.add_attachment("photo.jpg", jpeg_bytes())
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": att, "question": "What is it?"}, locale="fr")
    answer = await fake.wait_for_final(lambda s: s.get("original"))
    assert seen[0].question == "What is it?\nAnswer in Japanese."
    assert FRENCH_FOOTER.search(answer["content"])  # the bot's own lines stay the asker's


async def test_synced_commands_carry_their_localizations(fake: FakeDiscord, llava) -> None:
    await llava()
    ask = fake.find_command("ask")
    assert ask is not None
    assert ask["name_localizations"]["fr"] == "demander" and ask["name_localizations"]["ja"] == "質問"
    assert ask["description_localizations"]["de"] == "Stell eine Frage zu einem Bild"
    assert ask["description_localizations"]["es-ES"] == ask["description_localizations"]["es-419"] == "Haz una pregunta sobre una imagen"
    assert "en-US" not in (ask["description_localizations"] or {})  # English is the default, not a localization
    image = next(o for o in ask["options"] if o["name"] == "image")
    assert image["name_localizations"]["pt-BR"] == "imagem"
    assert image["description_localizations"]["fr"] == "L’image concernée"
    limit = next(o for o in ask["options"] if o["name"] == "max_tokens")
    assert limit["description_localizations"]["fr"] == f"Réponse la plus longue, en jetons (1-{limit['max_value']})"
    menu = fake.find_command("Describe image", type=3)
    assert menu is not None and menu["name_localizations"]["de"] == "Bild beschreiben"


async def left_by_a_crash(path: Path, payload: dict, crashes: int = 0) -> None:
    """A journal row as a killed process leaves it (``crashes``: kills while it was being answered)."""
    journal = Journal(path)
    await journal.open()
    (entry,) = await journal.add_group([payload])
    for _ in range(crashes):
        await journal.mark_active(entry)
        await journal.close()  # no park(): like a kill
        journal = Journal(path)
        await journal.open()
    await journal.close()


async def test_a_replayed_job_answers_in_its_journaled_language(fake: FakeDiscord, llava, tmp_path: Path) -> None:
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    source = ImageSource(att["url"], att["filename"], att["size"], att["content_type"])
    french, old, poison = (
        fake._make_message(author_id=ALICE_ID, channel_id=GENERAL_ID, content=f"<@{BOT_ID}> question {i}") for i in range(3)
    )

    def spec(message: dict, **extra: str) -> dict:
        return JobSpec(kind="message", channel_id=GENERAL_ID, message_id=int(message["id"]), source=source, question="?", user_id=ALICE_ID, **extra).to_json()

    path = tmp_path / "journal.sqlite3"
    await left_by_a_crash(path, spec(french, locale="fr", answer_in="question"))
    row = spec(old)
    del row["locale"], row["answer_in"]  # a row an older version journaled
    await left_by_a_crash(path, row)
    await left_by_a_crash(path, spec(poison, locale="de"), crashes=2)  # gets one line instead, in German
    bot, runtime = await llava()
    replies = {m["id"]: await fake.wait_for_final(lambda s, m=m: ref(s) == m["id"], timeout=30) for m in (french, old, poison)}
    assert FRENCH_FOOTER.search(replies[french["id"]]["content"]), replies[french["id"]]["content"]
    assert FOOTER.search(replies[old["id"]]["content"])  # no locale: English
    assert replies[poison["id"]]["content"] == "⚠️ Darauf konnte ich leider nicht antworten."
