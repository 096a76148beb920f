"""The playground page in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium): upload, streamed answer, follow-up,
refusal line, keyboard only, token, phone and dark mode, and the README's
screenshot (docs/playground.png).

Skipped when chromium, chromedriver or selenium is missing, except under CI
(``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.runtime import Runtime
from tests.fakes.slow_engine import SlowEngine, word_text
from tests.web.browser_support import ScriptedEngine, ServedPlayground, chromium, require_browser
from tests.web.helpers import FOOTER

pytestmark = pytest.mark.browser  # a real headless Chromium

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "bot" / "assets" / "example.jpg"
SCREENSHOT = ROOT / "docs" / "playground.png"
NOT_AN_IMAGE = "⚠️ That file is not an image."
#: the slow engine's answer: 12 words, 0.2 s apart (about 2.4 s in all)
SLOW_TOKENS, SLOW_DELAY_S = 12, 0.2
#: what the scripted engine says in the screenshot (the README's example answer)
SCRIPT = [
    "A small house with a red roof stands in a green field under a blue sky, "
    "next to a leafy tree and a white picket fence. The sun shines in the top right corner.",
    "The roof is red, with a brown chimney on its right side.",
]

LAST_TURN = """
const turns = document.querySelectorAll('#thread .turn');
const turn = turns[turns.length - 1];
if (!turn) return null;
const pick = (sel) => { const el = turn.querySelector(sel); return el && !el.hidden ? el.textContent : ''; };
return {text: pick('.answer-text'), footer: pick('.answer-footer'), place: pick('.answer-place'),
        error: pick('.answer-error'), turns: turns.length};
"""


def base_settings(**overrides: Any):
    """No journal, no per-minute limit (every test asks from 127.0.0.1)."""
    return load_settings(overrides={"state": {"journal": False}, "queue": {"per_user_per_minute": 0}, **overrides})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    with chromium(1280, 1000) as driver:
        yield driver


@pytest.fixture(scope="module")
def slow() -> Iterator[tuple[ServedPlayground, SlowEngine]]:
    """The playground over the slow OpenAI-compatible engine (a known pace)."""
    require_browser()
    holder: list[SlowEngine] = []

    async def setup(stack):
        server = await stack.enter_async_context(SlowEngine(tokens=SLOW_TOKENS, delay_s=SLOW_DELAY_S))
        holder.append(server)
        settings = base_settings(engines=[{"kind": "openai", "url": server.url}])
        return settings, Runtime(settings)

    with ServedPlayground(setup) as served:
        yield served, holder[0]


@pytest.fixture(scope="module")
def tiny(tiny_pair: tuple[Path, Path]) -> Iterator[ServedPlayground]:
    """The playground over the built-in tiny model (the real llama.cpp engine)."""
    require_browser()

    async def setup(stack):
        model = {"path": str(tiny_pair[0]), "mmproj": str(tiny_pair[1]), "n_ctx": 2048, "n_gpu_layers": 0}
        settings = base_settings(model=model, generation={"max_tokens": 16})
        return settings, Runtime(settings)

    with ServedPlayground(setup) as served:
        yield served


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, poll: float = 0.03) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("the page never reached the expected state")
        time.sleep(poll)


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.find_element("id", "model").text not in ("", "Connecting…"))


def last_turn(driver: Any) -> dict[str, Any] | None:
    return driver.execute_script(LAST_TURN)


def answered(driver: Any, turns: int) -> dict[str, Any]:
    """The last turn once it has its footer or its error line (and ``turns`` turns exist)."""
    return wait_for(lambda: (t := last_turn(driver)) and t["turns"] == turns and (t["footer"] or t["error"]) and t)


def choose(driver: Any, path: Path) -> None:
    driver.find_element("id", "image").send_keys(str(path))


def ask(driver: Any, question: str) -> None:
    field = driver.find_element("id", "question")
    field.clear()
    field.send_keys(question)
    driver.find_element("id", "ask").click()


# -- streaming and follow-ups -------------------------------------------------------------


def test_the_answer_streams_in_before_its_footer_and_a_follow_up_keeps_the_image(browser, slow) -> None:
    served, engine = slow
    open_page(browser, served.url)
    choose(browser, EXAMPLE)
    wait_for(lambda: browser.find_element("id", "preview").is_displayed())
    ask(browser, "What is in this picture?")
    seen: list[tuple[float, str, str]] = []

    def finished() -> bool:
        turn = last_turn(browser)
        seen.append((time.monotonic(), turn["text"], turn["footer"]))
        return bool(turn["footer"])

    wait_for(finished, timeout=20, poll=0.02)
    final = word_text(SLOW_TOKENS)
    partial = [(t, text) for t, text, foot in seen if text and not foot]
    assert partial, "no partial text was shown before the footer"
    assert all(final.startswith(text) for _, text in partial)
    assert len({text for _, text in partial}) >= 3  # it grew word by word
    assert seen[-1][0] - partial[0][0] >= SLOW_DELAY_S * (SLOW_TOKENS - 4)  # first words long before the end
    assert seen[-1][1] == final and FOOTER.match(seen[-1][2])

    follow = browser.find_element("id", "question")
    follow.send_keys("And what else?")
    follow.send_keys("\ue007")  # Enter
    turn = answered(browser, 2)
    assert turn["text"] == final and FOOTER.match(turn["footer"])
    messages = engine.last_body["messages"]
    assert [m["role"] for m in messages if m["role"] != "system"] == ["user", "assistant", "user"]
    assert next(m for m in messages if m["role"] == "assistant")["content"] == final
    images = [p for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]
    assert len(images) == 1  # the same image, sent once, from the conversation


def test_a_text_file_shows_the_same_line_as_in_discord(browser, tiny, tmp_path: Path) -> None:
    open_page(browser, tiny.url)
    note = tmp_path / "notes.txt"
    note.write_text("not a picture\n")
    choose(browser, note)
    ask(browser, "What is this?")
    turn = answered(browser, 1)
    assert turn["error"] == NOT_AN_IMAGE and not turn["footer"]
    assert browser.find_element("id", "status").text == NOT_AN_IMAGE
    browser.find_element("id", "new-image").click()
    assert last_turn(browser) is None  # the reset cleared the conversation
    choose(browser, EXAMPLE)  # and the page still works
    ask(browser, "")
    assert FOOTER.match(answered(browser, 1)["footer"])


# -- keyboard, token, screens -----------------------------------------------------------------


def test_keyboard_only_tab_order_visible_focus_and_enter_to_ask(browser, tiny) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, tiny.url)
    browser.execute_script("document.activeElement.blur(); window.focus();")
    order = []
    for _ in range(6):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        order.append(browser.switch_to.active_element.get_attribute("id"))
    assert order == ["skip", "image", "new-image", "question", "max-tokens", "ask"]
    outline = browser.execute_script("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth];")
    assert outline == ["solid", "3px"]  # the focused Ask button shows it
    browser.find_element("id", "image").send_keys(str(EXAMPLE))  # a file dialog cannot be driven headless
    browser.execute_script("document.getElementById('image').focus();")
    ring = browser.execute_script("return getComputedStyle(document.querySelector('.drop-label')).outlineStyle;")
    assert ring == "solid"  # the hidden file input's focus shows on the drop zone
    ActionChains(browser).send_keys(Keys.TAB, Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "question"
    ActionChains(browser).send_keys("What is it?").key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    assert last_turn(browser) is None  # Shift+Enter is a new line, not a question
    ActionChains(browser).send_keys("Answer briefly.", Keys.ENTER).perform()
    assert FOOTER.match(answered(browser, 1)["footer"])
    ActionChains(browser).send_keys("Anything else?").key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    assert FOOTER.match(answered(browser, 2)["footer"])
    questions = [e.text for e in browser.find_elements("css selector", "#thread .question-text")]
    assert questions == ["What is it?\nAnswer briefly.", "Anything else?"]


def test_with_a_token_the_page_asks_for_it_once(browser) -> None:
    async def setup(stack):
        settings = base_settings(web={"token": "open sesame, please"})
        return settings, Runtime(settings, engine=ScriptedEngine(["Fine."]))

    with ServedPlayground(setup) as served:
        browser.get(served.url)
        wait_for(lambda: browser.find_element("id", "auth").is_displayed())
        assert browser.switch_to.active_element.get_attribute("id") == "token"
        browser.switch_to.active_element.send_keys("open sesame, please\ue007")
        wait_for(lambda: not browser.find_element("id", "auth").is_displayed())
        choose(browser, EXAMPLE)
        ask(browser, "Hello?")
        assert answered(browser, 1)["text"] == "Fine."
        open_page(browser, served.url)  # a reload in the same tab: no second prompt
        assert not browser.find_element("id", "auth").is_displayed()
        browser.execute_script("sessionStorage.clear();")


def test_the_screenshot_phone_width_and_dark_mode(browser, tmp_path: Path) -> None:
    engine = ScriptedEngine(SCRIPT)

    async def setup(stack):
        settings = base_settings()
        return settings, Runtime(settings, engine=engine)

    with ServedPlayground(setup) as served:
        browser.set_window_size(1280, 1280)  # the whole conversation in view
        open_page(browser, served.url)
        choose(browser, EXAMPLE)
        ask(browser, "What is in this picture?")
        assert answered(browser, 1)["text"] == SCRIPT[0]
        ask(browser, "What colour is the roof?")
        assert answered(browser, 2)["text"] == SCRIPT[1]
        time.sleep(0.2)  # let the focus ring and scroll settle
        shot = tmp_path / "playground.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        if not SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
        try:
            browser.set_window_size(390, 844)  # a phone: one column, nothing wider than the screen
            wait_for(lambda: browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;"))
            size = browser.execute_script("return parseFloat(getComputedStyle(document.querySelector('.answer-text')).fontSize);")
            assert size >= 17  # large type on a phone too
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
            background = browser.execute_script("return getComputedStyle(document.body).backgroundColor;")
            assert background == "rgb(13, 15, 21)"
        finally:
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            browser.set_window_size(1280, 1000)
