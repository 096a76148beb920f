"""The house, checked: what the layout promises in the README's Development section.

Read from the source with ``ast`` (imports inside functions count too):

* no import cycles among the project's modules;
* no private name (leading underscore) imported from another module, or read
  off an imported module;
* only the Discord-facing parts import ``discord`` (the core, the engines and
  the playground take plain bytes, strings and numbers);
* at most 16 modules directly in ``bot/``, no source file over 800 lines,
  nothing in the package that only the tests use.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("bot", "cogs")
#: the parts that talk to Discord; everything else in bot/ must not import discord
DISCORD_FACING = (
    "bot/client.py", "bot/cli.py", "bot/jobs/", "bot/moderation/", "bot/bench/", "bot/testing/", "bot/i18n/commands.py", "cogs/"
)


def sources() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def project_edges() -> dict[str, set[str]]:
    mods = sources()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for module, names, _ in imports(path, name):
            for target in [f"{module}.{n}" for n in names] + [module]:
                if target in mods and target != name:
                    edges[name].add(target)
                    break
    return edges


def test_no_import_cycles() -> None:
    edges = project_edges()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_module() -> None:
    mods = sources()
    crossings: list[str] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        module_aliases: dict[str, str] = {}
        for module, names, line in imports(path, name):
            if module.split(".")[0] not in PACKAGES:
                continue
            for taken in names:
                if taken.startswith("_") and not taken.startswith("__"):
                    crossings.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{taken}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in mods:
                        module_aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.asname:
                        module_aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossings.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {module_aliases[node.value.id]}.{node.attr}")
    assert crossings == [], "\n".join(crossings)


def test_only_the_discord_facing_parts_import_discord() -> None:
    offenders = []
    for name, path in sources().items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(DISCORD_FACING):
            continue
        for module, _, line in imports(path, name):
            if module == "discord" or module.startswith("discord."):
                offenders.append(f"{rel}:{line}")
    assert offenders == [], f"these import discord but are not Discord-facing: {offenders}"


def test_the_house_stays_small_and_ships_no_test_code() -> None:
    top = sorted(p.name for p in (ROOT / "bot").glob("*.py"))
    assert len(top) <= 16, top
    long = {str(p.relative_to(ROOT)): n for p in sources().values() if (n := len(p.read_text().splitlines())) > 800}
    assert long == {}, long
    # the package must not need the tests: nothing in it imports tests.*
    uses_tests = [
        f"{path.relative_to(ROOT)}:{line}"
        for name, path in sources().items()
        for module, _, line in imports(path, name)
        if module == "tests" or module.startswith("tests.")
    ]
    assert uses_tests == [], uses_tests


def test_test_modules_share_helpers_not_each_other() -> None:
    """Shared test code lives in tests/helpers.py, tests/e2e/helpers.py, tests/fakes/ and the
    conftest files: no test module imports another test module."""
    tests = ROOT / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                if node.module.rsplit(".", 1)[-1].startswith("test_"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert offenders == [], offenders
