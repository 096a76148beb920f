"""Every llama-cpp-python internal the local engine uses, in one place.

llama-cpp-python's public API (``Llama(...)``, ``eval``, ``create_completion``)
does not cover what the engine does: libmtmd driven directly (stage timings,
our own CLIP context), a second llama context with several sequences
(:mod:`bot.engine.batched`), positions kept and dropped in the KV cache, the
model's ``use_extra_bufts`` (:mod:`bot.engine.cpu_repack`).  So the engine
reaches into private attributes (``Llama._model``, ``Llama._ctx``), plain
attributes it writes (``Llama.n_tokens``), the C bindings
(``llama_cpp.llama_cpp``, ``llama_cpp.mtmd_cpp``) and their structs.  Those
move between releases, which is why pyproject pins llama-cpp-python 0.3.x.

Nothing else in :mod:`bot.engine` imports ``llama_cpp``: the bindings are
reached through :data:`LIB` and :data:`MTMD`, which hand out only the names
listed here, and the private attributes through the functions below.
:data:`INTERNALS` names every one of them;
``tests/engine/test_native_internals.py`` checks each on the installed
llama-cpp-python and names the one that moved.

``llama_cpp`` is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: what this module was written against (pyproject pins the same range)
SUPPORTED = "llama-cpp-python>=0.3.36,<0.4"

#: the C API of libllama (``llama_cpp.llama_cpp``) the engine calls, by what uses it
LLAMA_NAMES: tuple[str, ...] = (
    # start-up (bot.engine.llama_cpp.init_native) and log routing (bot.engine.native_logs)
    "llama_backend_init",
    "llama_supports_gpu_offload",
    "llama_print_system_info",
    "llama_log_callback",
    "llama_log_set",
    # CPU repacking (bot.engine.cpu_repack): patched around Llama(), and its probe
    "llama_model_default_params",
    "llama_model_params",
    "llama_model_quantize_default_params",
    "llama_model_quantize",
    "LLAMA_FTYPE_MOSTLY_Q8_0",
    # the model's KV shape (bot.engine.batched.model_kv_shape)
    "llama_model_n_layer",
    "llama_model_n_embd",
    "llama_model_n_head",
    "llama_model_n_head_kv",
    # image embeddings into a context (bot.engine.prompt.Vision)
    "llama_pos",
    "llama_seq_id",
    # the batched context (bot.engine.batched)
    "llama_context_params",
    "llama_init_from_model",
    "llama_free",
    "llama_get_memory",
    "llama_memory_seq_rm",
    "llama_batch",
    "llama_batch_init",
    "llama_batch_free",
    "llama_decode",
    "llama_vocab_is_eog",
    "llama_token_to_piece",
    "llama_sampler_chain_default_params",
    "llama_sampler_chain_init",
    "llama_sampler_chain_add",
    "llama_sampler_init_dist",
    "llama_sampler_init_greedy",
    "llama_sampler_init_top_k",
    "llama_sampler_init_typical",
    "llama_sampler_init_top_p",
    "llama_sampler_init_min_p",
    "llama_sampler_init_temp",
    "llama_sampler_sample",
    "llama_sampler_free",
)

#: the C API of libmtmd (``llama_cpp.mtmd_cpp``), used by bot.engine.prompt and bot.engine.native_logs
MTMD_NAMES: tuple[str, ...] = (
    "mtmd_log_set",
    "mtmd_helper_log_set",
    "mtmd_context_params",
    "mtmd_context_params_default",
    "mtmd_init_from_file",
    "mtmd_support_vision",
    "mtmd_free",
    "mtmd_default_marker",
    "mtmd_helper_bitmap_init_from_buf",
    "mtmd_bitmap_set_id",
    "mtmd_bitmap_free",
    "mtmd_bitmap_p_ctypes",
    "mtmd_input_text",
    "mtmd_input_chunks_init",
    "mtmd_input_chunks_free",
    "mtmd_tokenize",
    "mtmd_helper_get_n_tokens",
    "mtmd_input_chunks_size",
    "mtmd_input_chunks_get",
    "mtmd_input_chunk_get_type",
    "mtmd_input_chunk_get_tokens_text",
    "mtmd_input_chunk_get_n_pos",
    "mtmd_input_chunk_get_n_tokens",
    "mtmd_input_chunk_get_id",
    "MTMD_INPUT_CHUNK_TYPE_TEXT",
    "MTMD_INPUT_CHUNK_TYPE_IMAGE",
    "mtmd_encode_chunk",
    "mtmd_get_output_embd",
    "mtmd_helper_decode_image_chunk",
    "mtmd_helper_post_decode_callback",
    # the tests' reference evaluation (tests/engine/test_families.py)
    "mtmd_helper_eval_chunks",
)

#: struct fields the engine sets or reads: "<module>.<struct>" -> fields
STRUCT_FIELDS: dict[str, tuple[str, ...]] = {
    "llama_cpp.llama_cpp.llama_model_params": ("use_extra_bufts",),
    "llama_cpp.llama_cpp.llama_context_params": ("n_ctx", "n_seq_max", "kv_unified", "n_batch", "n_ubatch"),
    "llama_cpp.llama_cpp.llama_batch": ("n_tokens", "token", "pos", "n_seq_id", "seq_id", "logits"),
    "llama_cpp.mtmd_cpp.mtmd_context_params": ("use_gpu", "print_timings", "n_threads", "image_max_tokens"),
    "llama_cpp.mtmd_cpp.mtmd_input_text": ("text", "text_len", "add_special", "parse_special"),
}

#: attributes of a loaded ``Llama`` used beyond its documented API (see the functions below)
LLAMA_ATTRIBUTES: tuple[str, ...] = (
    "_model.model",  # the llama_model pointer
    "_model.vocab",  # the llama_vocab pointer
    "_model.token_get_text",  # a special token's text
    "_ctx.ctx",  # the llama_context pointer
    "_ctx.kv_cache_clear",
    "_ctx.kv_cache_seq_rm",
    "context_params",  # copied for the batched context
    "n_tokens",  # written: the positions the KV cache holds
    "input_ids",  # the tokens at those positions
    "_requires_eval",  # written by the tests' reference evaluation
)

#: llama-cpp-python's LLaVA-family chat handlers whose CHAT_FORMAT and DEFAULT_SYSTEM_MESSAGE
#: bot.engine.templates uses as named formats
CHAT_HANDLERS: tuple[str, ...] = (
    "Llava15ChatHandler",
    "Llava16ChatHandler",
    "ObsidianChatHandler",
    "MoondreamChatHandler",
    "NanoLlavaChatHandler",
    "Llama3VisionAlphaChatHandler",
    "MiniCPMv26ChatHandler",
)

#: the package-level names used: the Llama class, its stopping criteria, the version and the native libraries
PACKAGE_NAMES: tuple[str, ...] = ("Llama", "StoppingCriteriaList", "__version__", "__file__")

#: every internal above as one dotted name: a module path then attributes, or "Llama." on a loaded model
INTERNALS: tuple[str, ...] = (
    *(f"llama_cpp.{name}" for name in PACKAGE_NAMES),
    *(f"llama_cpp.llama_cpp.{name}" for name in LLAMA_NAMES),
    *(f"llama_cpp.mtmd_cpp.{name}" for name in MTMD_NAMES),
    *(f"{struct}.{field}" for struct, fields in STRUCT_FIELDS.items() for field in fields),
    *(f"Llama.{path}" for path in LLAMA_ATTRIBUTES),
    *(f"llama_cpp.llama_chat_format.{h}.{a}" for h in CHAT_HANDLERS for a in ("CHAT_FORMAT", "DEFAULT_SYSTEM_MESSAGE")),
)

_MODULES = ("llama_cpp.llama_chat_format", "llama_cpp.llama_cpp", "llama_cpp.mtmd_cpp", "llama_cpp")


def present(name: str, llama: Any = None) -> bool:
    """Whether the internal ``name`` (one of :data:`INTERNALS`) exists; ``Llama.`` names need a loaded ``llama``."""
    if name.startswith("Llama."):
        if llama is None:
            raise ValueError(f"{name} is an attribute of a loaded Llama: pass one")
        obj, rest = llama, name.removeprefix("Llama.")
    else:
        module = next(m for m in _MODULES if name.startswith(m + "."))
        try:
            obj = importlib.import_module(module)
        except ImportError:
            return False
        rest = name.removeprefix(module + ".")
    for part in rest.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def version() -> str:
    """The installed llama-cpp-python's version."""
    return str(getattr(_package(), "__version__", "?"))


class Library:
    """One of llama-cpp-python's binding modules, imported on first use, handing out
    only the names listed for it (an unlisted name is an AttributeError that says so)."""

    def __init__(self, module: str, names: Sequence[str]) -> None:
        self.module_name = module
        self.names = frozenset(names)
        self._module: ModuleType | None = None

    def module(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name not in self.names:
            raise AttributeError(f"{self.module_name}.{name} is not listed in bot/engine/native.py")
        return getattr(self.module(), name)


#: libllama's C API: ``LIB.llama_decode(...)``
LIB = Library("llama_cpp.llama_cpp", LLAMA_NAMES)
#: libmtmd's C API: ``MTMD.mtmd_tokenize(...)``
MTMD = Library("llama_cpp.mtmd_cpp", MTMD_NAMES)


def _package() -> ModuleType:
    return importlib.import_module("llama_cpp")


# -- the Llama class and its private attributes ---------------------------------------------


def new_llama(**kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``."""
    return _package().Llama(**kwargs)


def stopping_criteria(*criteria: Callable[[Any, Any], bool]) -> Any:
    """A ``StoppingCriteriaList`` for ``create_completion``."""
    return _package().StoppingCriteriaList(list(criteria))


def model_pointer(llama: Any) -> Any:
    """The ``llama_model *`` of a loaded ``Llama`` (``Llama._model.model``)."""
    return llama._model.model


def vocab_pointer(llama: Any) -> Any:
    """The ``llama_vocab *`` of a loaded ``Llama`` (``Llama._model.vocab``)."""
    return llama._model.vocab


def context_pointer(llama: Any) -> Any:
    """The ``llama_context *`` of a loaded ``Llama`` (``Llama._ctx.ctx``)."""
    return llama._ctx.ctx


def context_params(llama: Any) -> Any:
    """A copy of the ``llama_context_params`` the ``Llama`` was created with."""
    return LIB.llama_context_params.from_buffer_copy(llama.context_params)


def token_text(llama: Any, token: int) -> str:
    """A special token's text (``<bos>``, ``</s>``...); "" when the model has none (``token`` < 0)."""
    if token < 0:
        return ""
    return str(llama._model.token_get_text(token))


def n_evaluated(llama: Any) -> int:
    """How many positions the ``Llama``'s KV cache holds (``Llama.n_tokens``)."""
    return int(llama.n_tokens)


def evaluated(llama: Any, start: int = 0) -> list[int]:
    """The tokens at positions ``start`` .. ``n_evaluated`` (``Llama.input_ids``)."""
    return [int(t) for t in llama.input_ids[start : llama.n_tokens]]


def set_evaluated(llama: Any, n_tokens: int, *, fresh_logits: bool = False) -> None:
    """Tell the ``Llama`` its KV cache now holds ``n_tokens`` positions (evaluated outside
    it: images by mtmd); ``fresh_logits``: the last one left logits to sample from."""
    llama.n_tokens = n_tokens
    if fresh_logits:
        llama._requires_eval = False


def truncate(llama: Any, n_past: int) -> None:
    """Keep the first ``n_past`` positions of the ``Llama``'s KV cache, drop the rest."""
    if n_past <= 0:
        llama._ctx.kv_cache_clear()
        n_past = 0
    else:
        llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llama.n_tokens = n_past


# -- the library around the model ------------------------------------------------------------


def init_backends() -> None:
    """Initialise llama.cpp's backends and register its devices (CUDA initialises here)."""
    LIB.llama_backend_init()
    LIB.llama_supports_gpu_offload()
    LIB.llama_print_system_info()


def gpu_offload_supported() -> bool:
    return bool(LIB.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's system line (its CPU features and backends)."""
    return bytes(LIB.llama_print_system_info()).decode("utf-8", "replace")


def library_files() -> list[Path]:
    """The native libraries llama-cpp-python ships (``llama_cpp/lib/*.so*``)."""
    lib_dir = Path(str(_package().__file__)).parent / "lib"
    return sorted(lib_dir.glob("*.so*")) if lib_dir.is_dir() else []


def quantize_q8_0(source: Path, target: Path) -> bool:
    """Quantize a GGUF model to Q8_0 with llama.cpp's own quantizer; False if it failed."""
    params = LIB.llama_model_quantize_default_params()
    params.ftype = LIB.LLAMA_FTYPE_MOSTLY_Q8_0
    return LIB.llama_model_quantize(str(source).encode(), str(target).encode(), params) == 0


@contextlib.contextmanager
def model_params_changed(change: Callable[[Any], None]) -> Iterator[list[Any]]:
    """Inside the block, the model parameters ``Llama.__init__`` starts from
    (``llama_model_default_params()``, llama-cpp-python 0.3.x) go through ``change``
    first; yields the list of the parameters handed out.  Not thread-safe: one at a time."""
    module: Any = LIB.module()
    original = module.llama_model_default_params
    used: list[Any] = []

    def changed() -> Any:
        params = original()
        change(params)
        used.append(params)
        return params

    module.llama_model_default_params = changed
    try:
        yield used
    finally:
        module.llama_model_default_params = original


def chat_handler_format(handler: str) -> tuple[str, str | None]:
    """``(CHAT_FORMAT, DEFAULT_SYSTEM_MESSAGE)`` of one of :data:`CHAT_HANDLERS`."""
    if handler not in CHAT_HANDLERS:
        raise ValueError(f"llama_chat_format.{handler} is not listed in bot/engine/native.py")
    cls = getattr(importlib.import_module("llama_cpp.llama_chat_format"), handler)
    return cls.CHAT_FORMAT, cls.DEFAULT_SYSTEM_MESSAGE
