"""Keep the catalogs in step with the code: ``python -m bot.i18n.build``.

* ``python -m bot.i18n.build``: extract every line marked ``N_("...")`` in
  ``bot/`` and ``cogs/``, and every slash command's name, description and
  option help (read from the cogs' source: ``app_commands.command``,
  ``describe``, ``Group``, ``ContextMenu``), into ``locales/llava_bot.pot``;
  then merge it into each ``locales/<lang>/LC_MESSAGES/llava_bot.po`` (new
  lines come in untranslated, lines gone from the code are dropped).
* ``--add ko``: start a catalog for another language (a Discord locale's
  language: "ko", or "zh_TW" for one region).
* ``--check``: exit 1 if the template is out of date or a catalog (other than
  English, the source language) leaves a line untranslated or fuzzy (a
  command's or option's name may stay empty: it stays English).

The ``.po`` files are read at run time (compiled in memory by Babel), so
there is no compile step; a line left untranslated is shown in English.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from bot.i18n.catalogs import DOMAIN, LOCALE_DIR, available

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("bot", "cogs")
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
NAME_CONTEXT = "command name"
OPTION_CONTEXT = "option name"


def _text(node: ast.expr) -> str | None:
    """A string literal, or an f-string as a template ("1-{limit}")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out: list[str] = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                out.append(part.value.replace("{", "{{").replace("}", "}}"))
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                out.append("{" + part.value.id + "}")
            else:
                return None
        return "".join(out)
    return None


def command_strings(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, text, msgctxt) for the names and descriptions of the app commands in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "commands":
            continue  # a text command (@bot sync): Discord does not localize those
        if called in ("command", "Group", "ContextMenu", "context_menu"):
            for keyword in node.keywords:
                text = _text(keyword.value)
                if text is None:
                    continue
                if keyword.arg == "name":
                    yield node.lineno, text, NAME_CONTEXT
                elif keyword.arg == "description":
                    yield node.lineno, text, None
        elif called in ("describe", "rename"):
            for keyword in node.keywords:
                text = _text(keyword.value)
                if keyword.arg is not None:
                    yield node.lineno, keyword.arg, OPTION_CONTEXT
                if text is not None and called == "describe":
                    yield node.lineno, text, None
                elif text is not None:
                    yield node.lineno, text, OPTION_CONTEXT


def marked_strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) for every ``N_("...")`` in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "N_" and node.args:
            text = _text(node.args[0])
            if text is not None and isinstance(node.args[0], ast.Constant):
                yield node.lineno, text


def extract() -> object:
    """The template catalog: every line to translate, with where it comes from."""
    from babel.messages.catalog import Catalog

    template = Catalog(project="llava-bot", domain=DOMAIN, fuzzy=False)
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("bot/i18n/"):
                continue
            for line, text in marked_strings(path):
                template.add(text, locations=[(rel, line)])
            if package == "cogs":
                for line, text, context in command_strings(path):
                    template.add(text, locations=[(rel, line)], context=context)
    return template


def _po_bytes(catalog: object) -> bytes:
    from babel.messages.pofile import write_po

    buffer = io.BytesIO()
    # file names, no line numbers: a catalog changes with its lines, not with edits around them
    write_po(buffer, catalog, width=100, sort_output=False, ignore_obsolete=True, include_lineno=False)  # type: ignore[arg-type]
    return _stable(buffer.getvalue())


def _stable(data: bytes) -> bytes:
    """Without the dates Babel writes into the header (the files change only with their lines)."""
    lines = [line for line in data.split(b"\n") if not line.startswith((b'"POT-Creation-Date:', b'"PO-Revision-Date:'))]
    return b"\n".join(lines)


def _read(path: Path, locale: str | None = None) -> object:
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        return read_po(f, locale=locale, domain=DOMAIN)


def update() -> None:
    template = extract()
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_bytes(_po_bytes(template))
    for name in available():
        path = LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po"
        catalog = _read(path, name)
        catalog.update(template, update_header_comment=False)  # type: ignore[attr-defined]
        path.write_bytes(_po_bytes(catalog))
        print(f"updated {path.relative_to(ROOT)}")


def add(name: str) -> None:
    from babel.messages.catalog import Catalog

    path = LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po"
    if path.exists():
        raise SystemExit(f"{path.relative_to(ROOT)} exists")
    catalog = Catalog(locale=name, project="llava-bot", domain=DOMAIN, fuzzy=False)
    catalog.update(extract())  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_po_bytes(catalog))
    available.cache_clear()
    print(f"wrote {path.relative_to(ROOT)}: translate its msgstr lines")


def problems() -> list[str]:
    """What ``--check`` reports: a stale template, untranslated or fuzzy lines."""
    found: list[str] = []
    template = extract()
    wanted = {(m.context, m.id) for m in template if m.id}  # type: ignore[attr-defined]
    if not TEMPLATE.exists() or _po_bytes(template) != TEMPLATE.read_bytes():
        found.append(f"{TEMPLATE.relative_to(ROOT)} is out of date: run python -m bot.i18n.build")
    for name in available():
        catalog = _read(LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po", name)
        have = {(m.context, m.id): m for m in catalog if m.id}  # type: ignore[attr-defined]
        for key in sorted(wanted - have.keys(), key=str):
            found.append(f"{name}: missing {key[1]!r}")
        if name == "en":
            continue
        for key in sorted(wanted & have.keys(), key=str):
            message = have[key]
            if key[0] in (NAME_CONTEXT, OPTION_CONTEXT) and not message.fuzzy:
                continue  # a name may stay English (an empty msgstr): Discord then shows the English one
            if message.fuzzy or not message.string:
                found.append(f"{name}: untranslated {key[1]!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.i18n.build", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report a stale template or untranslated lines (exit 1)")
    parser.add_argument("--add", metavar="LANG", help="start a catalog for another language (e.g. ko, zh_TW)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for line in found:
            print(line)
        return 1 if found else 0
    if args.add:
        add(args.add)
        return 0
    update()
    return 0


if __name__ == "__main__":
    sys.exit(main())
