"""Serving the playground: beside the bot (``llava-bot run``) or alone (``llava-bot serve``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from bot.config import ConfigError, Settings, WebSettings
from bot.reply import WEB_STOPPING
from bot.runtime import Runtime
from bot.web.app import create_app, is_loopback

log = logging.getLogger(__name__)

#: seconds a stopping server gives the requests still open (after the queue has closed)
HANDLER_GRACE_S = 5.0


def check_bind(settings: WebSettings) -> None:
    """Refuse to serve beyond this machine without a token (:class:`ConfigError`, one line)."""
    if settings.token is None and not is_loopback(settings.host):
        raise ConfigError(
            f"config error: web.host is {settings.host}, which other machines can reach: "
            "set a token in the LLAVA_BOT_WEB__TOKEN environment variable, or bind 127.0.0.1"
        )


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class WebServer:
    """The playground app on ``settings.host:settings.port`` over a started runtime."""

    def __init__(self, runtime: Runtime, settings: WebSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen and return the URL; ConfigError (one line) for an unprotected public bind or a busy port."""
        check_bind(self.settings)
        runner = web.AppRunner(
            create_app(self.runtime, self.settings),
            access_log=None,  # one log line per question instead, from bot.web.ask
            handle_signals=False,
            shutdown_timeout=HANDLER_GRACE_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            await site.start()
        except OSError as exc:  # a busy port, an address not on this machine
            await runner.cleanup()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError(f"config error: web: cannot listen on {where}: {exc.strerror or exc}") from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = url_for(self.settings.host, port)
        log.info("playground at %s%s", self.url, " (token required)" if self.settings.token else "")
        return self.url

    async def stop(self) -> None:
        """Stop listening; requests still open get a few seconds, then are cut."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def shut_down(runtime: Runtime, server: WebServer, bound: float) -> None:
    """Refuse new questions, let the running answer finish within ``bound``, then stop everything."""
    closing = asyncio.create_task(runtime.queue.close(WEB_STOPPING))
    _, pending = await asyncio.wait({closing}, timeout=bound)
    if pending:
        log.warning("the running answer is not done after %.0f s; stopping its generation", bound)
        runtime.queue.stop_running()
        await asyncio.wait({closing}, timeout=HANDLER_GRACE_S)
    await server.stop()
    await runtime.close()


async def serve(settings: Settings, announce: Callable[[str], None]) -> None:
    """``llava-bot serve``: load the model, serve the playground until SIGTERM or Ctrl-C."""
    check_bind(settings.web)
    runtime = Runtime(settings)
    server = WebServer(runtime, settings.web)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()  # load and warm the model before the first visitor
        announce(await server.start())
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await shut_down(runtime, server, settings.queue.shutdown_timeout_s)
        log.info("stopped")
