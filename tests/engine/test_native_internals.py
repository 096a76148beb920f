"""Every llama-cpp-python internal the engine uses (bot/engine/native.py) is where it was.

pyproject pins llama-cpp-python 0.3.x because the engine reaches past its
public API.  When a new release moves one of those internals, these tests
fail naming it, before any engine test fails in some less telling way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine import native
from bot.engine.templates import HANDLERS

ENGINE = Path(native.__file__).parent


def moved(name: str) -> str:
    return f"llama-cpp-python {native.version()} moved {name}; bot/engine/native.py needs updating"


@pytest.fixture(scope="module")
def llama(tiny_pair) -> Iterator[Any]:
    llm = native.new_llama(model_path=str(tiny_pair[0]), n_ctx=256, n_gpu_layers=0, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("name", native.INTERNALS)
def test_the_internal_is_where_native_py_expects_it(name: str, llama: Any) -> None:
    assert native.present(name, llama), moved(name)


def test_a_moved_internal_is_reported_by_name(llama: Any) -> None:
    assert not native.present("llama_cpp.llama_cpp.llama_no_such_function")
    assert not native.present("Llama._no_such_attribute", llama)
    assert not native.present("llama_cpp.llama_cpp.llama_context_params.no_such_field")
    assert moved("Llama._ctx") == f"llama-cpp-python {native.version()} moved Llama._ctx; bot/engine/native.py needs updating"


def test_only_listed_names_are_handed_out() -> None:
    assert native.LIB.llama_decode is not None
    with pytest.raises(AttributeError, match="llama_cpp.llama_cpp.llama_backend_free is not listed in bot/engine/native.py"):
        native.LIB.llama_backend_free  # noqa: B018
    with pytest.raises(AttributeError, match="not listed"):
        native.MTMD.mtmd_bitmap_init  # noqa: B018


def test_every_chat_handler_the_templates_name_is_listed() -> None:
    assert set(HANDLERS.values()) <= set(native.CHAT_HANDLERS)


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_only_native_py_imports_llama_cpp() -> None:
    """The rest of bot/engine reaches llama-cpp-python through native.py, so its list is complete."""
    for path in sorted(ENGINE.rglob("*.py")):
        if path.name == "native.py":
            continue
        bad = [m for m in _imports(path) if m == "llama_cpp" or m.startswith("llama_cpp.")]
        assert not bad, f"{path.relative_to(ENGINE.parent.parent)} imports {bad}: go through bot/engine/native.py"


def _names_used(path: Path, library: str) -> set[str]:
    """The attributes read from ``LIB``/``MTMD`` (or ``lc = LIB`` aliases) in one module."""
    names: set[str] = set()
    aliases = {library}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == library:
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add(node.attr)
    return names


@pytest.mark.parametrize("library, listed", [("LIB", native.LLAMA_NAMES), ("MTMD", native.MTMD_NAMES)])
def test_every_binding_the_engine_calls_is_listed(library: str, listed: tuple[str, ...]) -> None:
    used = set().union(*(_names_used(p, library) for p in ENGINE.rglob("*.py"))) - {"module", "module_name", "names"}
    assert used, library
    assert used <= set(listed), f"used but not listed in native.py: {sorted(used - set(listed))}"
