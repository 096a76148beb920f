"""Prometheus metrics and a health check on a small aiohttp server.

``/metrics``: queue depth, engines busy and down, jobs by outcome, stage
latency histograms, tokens/s, model loaded, GPU offload, gateway connected.
``/healthz``: 200 only when the model is loaded and the Discord gateway is
connected, else 503 (with the reason).  Off unless ``metrics.port`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.engine.base import Answer

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def gateway_connected(bot: Any) -> bool:
    """True if a discord.py client is ready and its websocket is open."""
    if bot is None or bot.is_closed() or not bot.is_ready():
        return False
    ws = getattr(bot, "ws", None)
    socket = getattr(ws, "socket", None)
    return socket is not None and not socket.closed


class _StateCollector(Collector):
    """Reads the queue, the engines and the bot at scrape time."""

    def __init__(self, runtime: Runtime, bot: Callable[[], Any]) -> None:
        self.runtime = runtime
        self.bot = bot

    def collect(self) -> Iterator[Any]:
        queue = self.runtime.queue
        stats = queue.stats()
        yield GaugeMetricFamily("llava_bot_queue_depth", "Jobs waiting for an engine", value=stats.depth)
        yield GaugeMetricFamily("llava_bot_engines_busy", "Engines working on a job", value=stats.busy)
        yield GaugeMetricFamily("llava_bot_engines", "Engines configured", value=stats.engines)
        yield GaugeMetricFamily("llava_bot_engines_down", "Engines out after failing", value=len(queue.down))
        jobs = CounterMetricFamily("llava_bot_jobs", "Queue jobs by outcome", labels=["outcome"])
        jobs.add_metric(["answered"], stats.served)
        jobs.add_metric(["failed"], stats.failed)
        jobs.add_metric(["cancelled"], stats.cancelled)
        jobs.add_metric(["refused"], stats.refused)
        yield jobs
        bot = self.bot()
        if bot is not None:
            replies = CounterMetricFamily("llava_bot_replies", "Questions by how they ended", labels=["outcome"])
            for outcome, count in sorted(bot.outcomes.items()):
                replies.add_metric([outcome], count)
            yield replies
            checker = getattr(getattr(bot, "moderation", None), "checker", None)
            if checker is not None:
                checks = CounterMetricFamily("llava_bot_rule_checks", "Moderation rule answers received, by rule", labels=["rule"])
                matches = CounterMetricFamily("llava_bot_rule_matches", "Moderation rule answers that matched (alerts), by rule", labels=["rule"])
                undecided = CounterMetricFamily("llava_bot_rule_undecided", "Moderation rule answers neither yes nor no, by rule", labels=["rule"])
                for rule in sorted(checker.checks):
                    checks.add_metric([rule], checker.checks[rule])
                    matches.add_metric([rule], checker.matches[rule])
                    undecided.add_metric([rule], checker.undecided[rule])
                yield checks
                yield matches
                yield undecided
                remembered = CounterMetricFamily(
                    "llava_bot_rule_remembered",
                    "Rule questions answered from the moderators' decision memory instead of the model, by rule and decision"
                    " (fine: no alert; deleted: alerted at once)",
                    labels=["rule", "decision"],
                )
                for (rule, decision), count in sorted(checker.remembered.items()):
                    remembered.add_metric([rule, decision], count)
                yield remembered
        loaded = GaugeMetricFamily("llava_bot_model_loaded", "1 when the engine is ready", labels=["engine"])
        offload = GaugeMetricFamily("llava_bot_gpu_offload", "1 when the text model runs on a GPU", labels=["engine"])
        for engine in self.runtime.engines:
            info = engine.info
            loaded.add_metric([info.name], 1.0 if self.runtime.started and info.name not in queue.down else 0.0)
            offload.add_metric([info.name], 1.0 if info.gpu_offload else 0.0)
        yield loaded
        yield offload
        yield GaugeMetricFamily("llava_bot_gateway_connected", "1 when the Discord gateway is connected", value=1.0 if gateway_connected(bot) else 0.0)


class Metrics:
    def __init__(self, runtime: Runtime, bot: Any = None) -> None:
        self.runtime = runtime
        self.bot = bot
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(runtime, lambda: self.bot))
        self.stages = Histogram(
            "llava_bot_stage_seconds", "Time per stage of an answer", ["stage"], buckets=STAGE_BUCKETS, registry=self.registry
        )
        self.tokens_per_s = Histogram(
            "llava_bot_tokens_per_second", "Generation speed per answer",
            buckets=(1, 5, 10, 20, 40, 60, 80, 120, 200, 400, 1000, 5000), registry=self.registry,
        )
        runtime.queue.listeners.append(self.observe)
        self._runner: web.AppRunner | None = None

    def observe(self, answer: Answer) -> None:
        t = answer.timings
        for stage, seconds in (
            ("queue", t.queue_wait_s),
            ("image", t.image_encode_s),
            ("prompt", t.prompt_eval_s),
            ("generation", t.generation_s),
            ("first_token", t.first_token_s),
            ("total", t.queue_wait_s + t.total_s),
        ):
            self.stages.labels(stage).observe(seconds)
        if t.tokens_per_s > 0:
            self.tokens_per_s.observe(t.tokens_per_s)

    def health(self) -> tuple[bool, str]:
        if not self.runtime.started:
            return False, "model not loaded"
        if self.bot is not None and not gateway_connected(self.bot):
            return False, "Discord gateway not connected"
        return True, "ok"

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.health()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def start(self, host: str, port: int) -> int:
        """Serve /metrics and /healthz; returns the port (useful with port 0)."""
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # getsockname() of each socket bound
        bound = addresses[0][1] if addresses else port
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, bound)
        return int(bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
