"""What the browser tests need: the playground served from a thread (selenium
blocks), a scripted engine for the README's screenshot, and the browser itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from bot.config import Settings
from bot.engine.base import Answer, EngineInfo, StageTimings, TextSink, VisionRequest
from bot.runtime import Runtime
from bot.web import WebServer

Setup = Callable[[contextlib.AsyncExitStack], Awaitable[tuple[Settings, Runtime]]]


class ScriptedEngine:
    """An engine that answers each question with the next scripted text, a word at a
    time (``delay_s`` apart), with measured timings: for screenshots that read well."""

    def __init__(self, answers: list[str], delay_s: float = 0.03) -> None:
        self.answers = list(answers)
        self.delay_s = delay_s
        self.requests: list[VisionRequest] = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="scripted", model="scripted test engine", chat_format="llava-1-5")

    def load(self) -> None:
        """Nothing to load."""

    def close(self) -> None:
        """Nothing to free."""

    def generate(self, request: VisionRequest, *, should_stop: Any = None, on_text: Any = None) -> Answer:
        """Stream the next scripted answer."""
        self.requests.append(request)
        text = self.answers[(len(self.requests) - 1) % len(self.answers)]
        sink, started = TextSink(on_text), time.perf_counter()
        words = text.split(" ")
        for index, word in enumerate(words):
            time.sleep(self.delay_s)
            sink(word if index == 0 else " " + word)
        total = time.perf_counter() - started
        timings = StageTimings(
            image_encode_s=0.0 if request.history else 0.02, prompt_eval_s=0.01, generation_s=total,
            total_s=total + 0.03, prompt_tokens=640, completion_tokens=len(words) * 4 // 3,
        )
        return Answer(text, "stop", timings.prompt_tokens, timings.completion_tokens, timings)


class ServedPlayground:
    """``setup`` (a runtime and its settings) and the playground over it, served on
    127.0.0.1 from a thread with its own event loop; ``url`` once entered."""

    def __init__(self, setup: Setup) -> None:
        self._setup = setup
        self.url = ""
        self.runtime: Runtime | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="playground", daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def call(self, coro: Awaitable[Any], timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    async def _start(self) -> str:
        settings, runtime = await self._setup(self._stack)
        self.runtime = runtime
        await runtime.start()
        self._stack.push_async_callback(runtime.close)
        web = WebServer(runtime, settings.web.model_copy(update={"port": 0}))
        url = await web.start()
        self._stack.push_async_callback(web.stop)
        return url

    def __enter__(self) -> ServedPlayground:
        self._thread.start()
        try:
            self.url = self.call(self._start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self._stack.aclose(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install chromium chromium-driver)"
    return None


def require_browser() -> None:
    """Skip without a browser; under CI (``CI`` set), fail: CI must prove the page works."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run in CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """Headless Debian chromium through chromedriver (both from PATH; nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
