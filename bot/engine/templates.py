"""Which chat template turns a question into the model's prompt, and rendering it.

``model.chat_format`` chooses:

* ``"auto"`` (the default): the template the GGUF carries
  (``tokenizer.chat_template``), rendered the way llama-server renders it:
  sandboxed Jinja, the model's own ``bos_token``/``eos_token``,
  ``add_generation_prompt``, and each image as mtmd's marker inside the
  message's text.  A model file without a template gets one chosen from its
  projector's metadata (LLaVA-1.5's MLP projector: ``llava-1-5``; with
  LLaVA-1.6's grid pinpoints: ``llava-1-6``; Gemma 3's: ``gemma-3``;
  Qwen2-VL's and Qwen2.5-VL's mergers: ``qwen2-vl``...).
* a named format: llama-cpp-python's LLaVA-family handler templates (their
  exact wording and default system message), or our own ``gemma-3`` and
  ``qwen2-vl`` for files that lack their template.

The choice is a :class:`ChatTemplate`; ``describe()`` says which one and
where it came from, for ``doctor`` and ``/status``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.engine.base import EngineError, VisionRequest, chat_messages
from bot.engine.native import chat_handler_format
from bot.engine.projector import Projector

log = logging.getLogger(__name__)

#: named format -> llama-cpp-python handler class (whose CHAT_FORMAT and default system message we use)
HANDLERS: dict[str, str] = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "bakllava-1": "Llava15ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream2": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
}

# Our own templates in the prompt formats of Gemma 3 and Qwen2-VL / Qwen2.5-VL
# (ChatML), for model files that do not carry theirs.
GEMMA_3 = """{{ bos_token }}
{%- set first = namespace(system='') -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}{%- set first.system = message.content + '\n\n' -%}
{%- else -%}
{{ '<start_of_turn>' + ('model' if message.role == 'assistant' else 'user') + '\n' }}
{%- if message.role == 'user' -%}{{ first.system }}{%- set first.system = '' -%}{%- endif -%}
{{ message.content | trim }}<end_of_turn>{{ '\n' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<start_of_turn>model{{ '\n' }}{%- endif -%}"""

QWEN2_VL = """{%- for message in messages -%}
{%- if loop.first and message.role != 'system' -%}<|im_start|>system
You are a helpful assistant.<|im_end|>{{ '\n' }}
{%- endif -%}
<|im_start|>{{ message.role }}{{ '\n' }}{{ message.content }}<|im_end|>{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\n' }}{%- endif -%}"""

OWN_TEMPLATES: dict[str, str] = {"gemma-3": GEMMA_3, "qwen2-vl": QWEN2_VL}

#: every named format ``model.chat_format`` accepts, besides "auto"
NAMED_FORMATS: tuple[str, ...] = (*HANDLERS, *OWN_TEMPLATES)

#: projector type -> the named format to use when the model file has no template
PROJECTOR_FORMATS: dict[str, str] = {
    "mlp": "llava-1-5",
    "mlp_norm": "llava-1-5",
    "ldp": "llava-1-5",
    "ldpv2": "llava-1-5",
    "resampler": "minicpm-v-2.6",
    "gemma3": "gemma-3",
    "qwen2vl_merger": "qwen2-vl",
    "qwen2.5vl_merger": "qwen2-vl",
    "qwen3vl_merger": "qwen2-vl",
}

#: end-of-turn texts: when the template uses one, it also ends the answer as text
END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "<end_of_utterance>")


@dataclass(frozen=True)
class ChatTemplate:
    """The template in use: its name, where it came from, its Jinja text."""

    name: str  # "gguf" for the model file's own, else the named format
    source: str  # "model file" | "model.chat_format" | "projector <type>" | "fallback"
    text: str
    default_system: str | None = None
    #: user content as OpenAI-style parts (the handler templates), else one string with markers
    parts: bool = False
    stops: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        if self.source == "model file":
            return "the model file's own template (tokenizer.chat_template)"
        if self.source == "model.chat_format":
            return f"{self.name} (set by model.chat_format)"
        if self.source == "fallback":
            return f"{self.name} (no template in the model file, unknown projector: a guess)"
        return f"{self.name} (no template in the model file; chosen from the {self.source})"


def named(name: str, source: str = "model.chat_format") -> ChatTemplate:
    """A named format's template."""
    if name in OWN_TEMPLATES:
        text = OWN_TEMPLATES[name]
        return ChatTemplate(name, source, text, stops=_stops(text))
    if name not in HANDLERS:
        raise EngineError(f"unknown chat format {name!r}; known: auto, {', '.join(NAMED_FORMATS)}")
    text, default_system = chat_handler_format(HANDLERS[name])
    return ChatTemplate(name, source, text, default_system, parts=True, stops=_stops(text))


def choose(chat_format: str, model_template: str | None, projector: Projector) -> ChatTemplate:
    """The template for ``model.chat_format``: a named format wins; "auto" takes
    the model file's own template, else infers one from the projector."""
    if chat_format != "auto":
        return named(chat_format)
    if model_template and model_template.strip():
        return ChatTemplate("gguf", "model file", model_template, stops=_stops(model_template))
    return inferred(projector)


def inferred(projector: Projector) -> ChatTemplate:
    """The named format a projector implies (``llava-1-5`` when it is unknown)."""
    if projector.kind == "mlp" and projector.grid_pinpoints:
        return named("llava-1-6", f"projector ({projector.kind} with grid pinpoints)")
    if projector.kind in PROJECTOR_FORMATS:
        return named(PROJECTOR_FORMATS[projector.kind], f"projector ({projector.kind})")
    log.warning("no chat template in the model file and an unknown projector %r: using llava-1-5", projector.kind)
    return named("llava-1-5", "fallback")


def working_renderer(chat_format: str, model_template: str | None, projector: Projector, *, bos: str, eos: str) -> Renderer:
    """The :class:`Renderer` of the template :func:`choose` picks, checked on a plain conversation.

    A model file's own template that cannot render one is logged and replaced
    by the one its projector implies.  ``bos``/``eos``: the model's special tokens' text.
    """
    template = choose(chat_format, model_template, projector)
    try:
        return checked_renderer(template, bos=bos, eos=eos)
    except EngineError as exc:
        if template.source != "model file":
            raise
        log.warning("the model file's chat template does not work here (%s); using the projector's", exc)
    return checked_renderer(inferred(projector), bos=bos, eos=eos)


def checked_renderer(template: ChatTemplate, *, bos: str, eos: str) -> Renderer:
    """A :class:`Renderer` for ``template`` that has rendered a probe conversation
    (images, history, a system message); EngineError if it cannot."""
    renderer = Renderer(template, bos=bos, eos=eos)
    probe = VisionRequest(
        images=("x",), question="What is this?", max_tokens=1, history=(("Hi", "Hello."),), system_prompt="Be brief."
    )
    renderer.render(probe, "<__media__>")
    return renderer


def _stops(text: str) -> tuple[str, ...]:
    return tuple(s for s in END_OF_TURN if s in text)


def _raise(message: str) -> None:
    raise EngineError(f"the chat template refused the conversation: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=bool(kw.get("sort_keys")))


class Renderer:
    """A compiled :class:`ChatTemplate` that renders requests into prompt text."""

    def __init__(self, template: ChatTemplate, *, bos: str, eos: str) -> None:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        self.template = template
        self.bos = bos
        self.eos = eos
        try:
            self._jinja = env.from_string(template.text)
        except Exception as exc:  # a TemplateSyntaxError, or worse, from a model file
            raise EngineError(f"the chat template of {template.describe()} does not compile: {exc}") from exc
        #: set when the template refuses a system message: it goes into the first question instead
        self.fold_system = False
        #: set when the template reads message content only as a list of typed parts (SmolVLM's):
        #: each message's text then goes as one {"type": "text"} part, as llama-server does
        self.typed_content = not template.parts and not self._shows_string_content()

    def render(self, request: VisionRequest, marker: str) -> str:
        """The prompt text for ``request``, each image as ``marker``."""
        system = request.system_prompt if request.system_prompt is not None else self.template.default_system
        messages = self.messages(request, marker, system)
        if self.fold_system:
            messages = _fold_system(messages)
        try:
            return self._render(messages)
        except Exception as exc:
            if self.fold_system or not system:
                raise _render_error(exc) from exc
        # Some templates (Gemma 2, Mistral's) raise on a system role: fold it
        # into the first question, as llama-server does, and remember that.
        try:
            text = self._render(_fold_system(messages))
        except Exception as exc:
            raise _render_error(exc) from exc
        self.fold_system = True
        log.info("the chat template takes no system message: it goes before the first question")
        return text

    def messages(self, request: VisionRequest, marker: str, system: str | None) -> list[dict[str, Any]]:
        markers = [marker] * len(request.images)
        if self.template.parts:
            return chat_messages(request, markers, system)
        messages = string_messages(request, markers, system)
        if self.typed_content:
            return [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
        return messages

    def _shows_string_content(self) -> bool:
        """Whether a message whose content is a plain string reaches the prompt."""
        sentinel = "llava-bot-probe-7d1f"
        try:
            return sentinel in self._render([{"role": "user", "content": sentinel}])
        except Exception:  # a template that cannot take it at all: try typed parts
            return False

    def _render(self, messages: list[dict[str, Any]]) -> str:
        return self._jinja.render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos, eos_token=self.eos
        )


def string_messages(request: VisionRequest, markers: Sequence[str], system: str | None) -> list[dict[str, Any]]:
    """Chat messages whose content is one string: the images' markers, each on
    its own line, before the first question (how llama-server flattens them)."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    turns = [*request.history, (request.question, None)]
    for index, (question, answer) in enumerate(turns):
        lead = "".join(f"{m}\n" for m in markers) if index == 0 else ""
        messages.append({"role": "user", "content": lead + question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


def _fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                message["content"] = f"{system}\n\n{content}"
            else:
                message["content"] = [{"type": "text", "text": f"{system}\n\n"}, *content]
            break
    return rest


def _render_error(exc: Exception) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    return EngineError(f"the chat template could not render this conversation: {exc}")
