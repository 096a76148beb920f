"""Choosing and rendering chat templates (bot/engine/templates.py), without a model."""

from __future__ import annotations

import pytest

from bot.engine.base import EngineError, VisionRequest
from bot.engine.projector import Projector
from bot.engine.templates import NAMED_FORMATS, Renderer, choose, inferred, named

MLP = Projector("mlp", image_size=336)
QUESTION = VisionRequest(
    images=("a", "b"),
    question="What now?",
    max_tokens=8,
    history=(("First?", "An answer."),),
    system_prompt="Be brief.",
)


def test_a_named_format_wins_over_the_model_files_template() -> None:
    template = choose("llava-1-6", "{{ 'own' }}", MLP)
    assert (template.name, template.source) == ("llava-1-6", "model.chat_format")
    assert "model.chat_format" in template.describe()


def test_auto_takes_the_model_files_template() -> None:
    template = choose("auto", "{{ messages[0].content }}", MLP)
    assert (template.name, template.source) == ("gguf", "model file")
    assert "tokenizer.chat_template" in template.describe()


@pytest.mark.parametrize(
    ("projector", "expected"),
    [
        (MLP, "llava-1-5"),
        (Projector("mlp", grid_pinpoints=True), "llava-1-6"),
        (Projector("resampler"), "minicpm-v-2.6"),
        (Projector("gemma3", image_size=896), "gemma-3"),
        (Projector("qwen2vl_merger"), "qwen2-vl"),
        (Projector("qwen2.5vl_merger"), "qwen2-vl"),
    ],
)
def test_without_a_template_auto_infers_the_format_from_the_projector(projector: Projector, expected: str) -> None:
    for blank in (None, "", "  \n"):
        template = choose("auto", blank, projector)
        assert template.name == expected
        assert projector.kind in template.describe()


def test_an_unknown_projector_without_a_template_falls_back_to_llava_and_says_so() -> None:
    template = inferred(Projector("some-new-thing"))
    assert (template.name, template.source) == ("llava-1-5", "fallback")
    assert "guess" in template.describe()


def test_every_named_format_renders_a_conversation_with_images() -> None:
    for name in NAMED_FORMATS:
        text = Renderer(named(name), bos="<s>", eos="</s>").render(QUESTION, "<__media__>")
        assert text.count("<__media__>") == 2, name
        assert "What now?" in text and "An answer." in text, name


def test_gemma_3_format() -> None:
    text = Renderer(named("gemma-3"), bos="<bos>", eos="<eos>").render(QUESTION, "<M>")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n<M>\n<M>\nFirst?<end_of_turn>\n"
        "<start_of_turn>model\nAn answer.<end_of_turn>\n"
        "<start_of_turn>user\nWhat now?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert named("gemma-3").stops == ("<end_of_turn>",)


def test_qwen2_vl_format_has_a_default_system_line() -> None:
    plain = VisionRequest(images=("a",), question="Q?", max_tokens=8)
    text = Renderer(named("qwen2-vl"), bos="", eos="<|im_end|>").render(plain, "<M>")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<M>\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "<|im_end|>" in named("qwen2-vl").stops


def test_llava_handler_formats_keep_their_default_system_message() -> None:
    plain = VisionRequest(images=("a",), question="Q?", max_tokens=8)
    text = Renderer(named("llava-1-5"), bos="<s>", eos="</s>").render(plain, "<M>")
    # Rendered as llama-cpp-python's handler renders it (trim_blocks eats the "\n" after a tag).
    assert text.startswith("A chat between a curious human") and text.endswith("questions.USER: <M>Q?ASSISTANT: ")


NO_SYSTEM = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
)


def test_a_template_that_refuses_the_system_role_gets_it_in_the_first_question() -> None:
    renderer = Renderer(choose("auto", NO_SYSTEM, MLP), bos="", eos="")
    text = renderer.render(QUESTION, "<M>")
    assert text.startswith("[user] Be brief.\n\n<M>\n<M>\nFirst?\n")
    assert renderer.fold_system
    assert renderer.render(QUESTION, "<M>") == text  # remembered, same result


def test_a_template_that_refuses_everything_is_a_clear_engine_error() -> None:
    renderer = Renderer(choose("auto", "{{ raise_exception('no thanks') }}", MLP), bos="", eos="")
    with pytest.raises(EngineError, match="no thanks"):
        renderer.render(QUESTION, "<M>")


def test_a_template_cannot_reach_python_internals() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(EngineError):
        Renderer(choose("auto", evil, MLP), bos="", eos="").render(QUESTION, "<M>")


def test_a_template_that_does_not_compile_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="does not compile"):
        Renderer(choose("auto", "{% for %}", MLP), bos="", eos="")


def test_hugging_face_template_helpers_are_there() -> None:
    text = "{{ messages | tojson }}|{{ strftime_now('%Y') | length }}{% for m in messages %}{% break %}{% endfor %}"
    out = Renderer(choose("auto", text, MLP), bos="", eos="").render(
        VisionRequest(images=(), question="é?", max_tokens=8), "<M>"
    )
    assert out == '[{"role": "user", "content": "é?"}]|4'


def test_the_settings_accept_exactly_auto_and_the_named_formats() -> None:
    from typing import get_args

    from bot.config import ChatFormat

    assert set(get_args(ChatFormat)) == {"auto", *NAMED_FORMATS}


# SmolVLM2's template reads content only as a list of typed parts.
TYPED_ONLY = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}<image>{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def test_a_template_that_reads_only_typed_parts_gets_the_text_as_one_part() -> None:
    renderer = Renderer(choose("auto", TYPED_ONLY, MLP), bos="", eos="")
    assert renderer.typed_content
    plain = VisionRequest(images=("a",), question="What is it?", max_tokens=8)
    assert renderer.render(plain, "<M>") == "<|im_start|>User:<M>\nWhat is it?<end_of_utterance>\nAssistant:"
    assert not Renderer(named("gemma-3"), bos="", eos="").typed_content
