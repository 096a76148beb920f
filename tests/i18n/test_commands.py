"""Slash command names and descriptions through discord.py's translator; alerts in a server's language."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.i18n.commands import CatalogTranslator, valid_name


def context(location: app_commands.TranslationContextLocation, data: object = None) -> app_commands.TranslationContext:
    return app_commands.TranslationContext(location, data)  # type: ignore[arg-type]


async def test_the_translator_names_and_describes_in_each_language() -> None:
    translator = CatalogTranslator()
    name = context(app_commands.TranslationContextLocation.command_name)
    description = context(app_commands.TranslationContextLocation.command_description)
    option = context(app_commands.TranslationContextLocation.parameter_name)
    ask = app_commands.locale_str("ask")
    assert await translator.translate(ask, discord.Locale.french, name) == "demander"
    assert await translator.translate(ask, discord.Locale.japanese, name) == "質問"
    assert await translator.translate(app_commands.locale_str("image"), discord.Locale.brazil_portuguese, option) == "imagem"
    described = await translator.translate(app_commands.locale_str("Longest answer in tokens (1-64)"), discord.Locale.german, description)
    assert described == "Längste Antwort in Token (1-64)"  # an f-string's template
    # English, a language with no catalog, a name kept in English: Discord shows the default
    assert await translator.translate(ask, discord.Locale.american_english, name) is None
    assert await translator.translate(ask, discord.Locale.korean, name) is None
    assert await translator.translate(app_commands.locale_str("max_tokens"), discord.Locale.french, option) is None
    assert await translator.translate(app_commands.locale_str("no such line"), discord.Locale.french, description) is None


def test_names_discord_takes() -> None:
    assert valid_name("demander") and valid_name("質問") and valid_name("texte-alt")
    assert not valid_name("Demander") and not valid_name("deux mots") and not valid_name("x" * 33)
    assert valid_name("Décrire l’image", context_menu=True)


async def test_an_alert_in_the_servers_language() -> None:
    from bot.config import ModerationRule, ModerationSettings
    from bot.moderation.alerts import AlertView, alert_embed
    from bot.moderation.checker import ImageReport, Verdict, WatchedImage, WatchedPost

    rule = ModerationRule(name="nsfw", question="Is this explicit?")
    verdict = Verdict(rule="nsfw", matched=True, reason="Yes.", frame=1, frames=4)
    image = WatchedImage("https://cdn.discordapp.com/x.png", "x.png", 10, "image/png")
    post = WatchedPost(3, 2, 1, 4, "bob", "https://discord.com/channels/1/2/3", (image,), created=0.0)
    embed = alert_embed(rule, verdict, ImageReport(image, verdicts=[verdict]), post, "de")
    assert embed.title == "🚩 Regel „nsfw“ hat angeschlagen"
    assert [f.name for f in embed.fields] == ["Bildbeschreibung", "Gepostet von", "Kanal", "Bild", "Einzelbild"]
    assert embed.fields[0].value == "(keine Bildbeschreibung)" and embed.fields[-1].value == "Einzelbild 2 von 4"
    assert embed.footer.text == "Das Modell hilft, ein Moderator entscheidet."
    view = AlertView(ModerationSettings(), jump_url=post.jump_url, locale="de")
    assert [item.label for item in view.children] == ["Sieht gut aus", "Nachricht löschen", "Zur Nachricht"]  # type: ignore[attr-defined]
    english = AlertView(ModerationSettings(), jump_url=post.jump_url)
    assert [item.label for item in english.children] == ["Looks fine", "Delete message", "Go to message"]  # type: ignore[attr-defined]
    assert alert_embed(rule, verdict, ImageReport(image, verdicts=[verdict]), post).title == "🚩 Rule “nsfw” matched"
