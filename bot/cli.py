"""``llava-bot``: ask, run, serve, bench, doctor, fetch-model.

Exit codes: 0 answered / healthy; 2 bad input (a one-line reason on stderr,
no traceback): a bad setting, a missing or non-image file, a refused job;
1 anything else (the traceback goes to the log).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import ConfigError, Settings, load_settings
from bot.reply import RESTARTING

if TYPE_CHECKING:
    from bot.client import LlavaBot
    from bot.runtime import Runtime
    from bot.web import WebServer

log = logging.getLogger("llava_bot")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

CUDA_REINSTALL = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
    "--no-binary llama-cpp-python llama-cpp-python"
)


class BadInput(Exception):
    """A user error the CLI reports in one line with exit code 2."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a job line carries its fields under "job"."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if job is not None:
            entry["job"] = job
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, verbose: bool, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, level), handlers=[handler])
    if not verbose:
        # llama.cpp / mtmd chatter is debug output; keep it out of -v-less runs.
        logging.getLogger("llava_bot.llama_cpp").setLevel(logging.WARNING)
        logging.getLogger("gguf").setLevel(logging.WARNING)


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    model: dict[str, Any] = {}
    if getattr(args, "model", None):
        model["path"] = args.model
    if getattr(args, "mmproj", None):
        model["mmproj"] = args.mmproj
    if getattr(args, "chat_format", None):
        model["chat_format"] = args.chat_format
    if getattr(args, "n_gpu_layers", None) is not None:
        model["n_gpu_layers"] = args.n_gpu_layers
    if model:
        overrides["model"] = model
    return overrides


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides=_model_overrides(args))


# -- ask ----------------------------------------------------------------------


class LivePrinter:
    """Prints an answer as it is generated (``llava-bot ask`` on a terminal)."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.text = ""

    def __call__(self, piece: str) -> None:
        if not self.text:
            piece = piece.lstrip()
        self.text += piece
        self.out.write(piece)
        self.out.flush()

    def restart(self) -> None:
        """The answer starts again on another engine."""
        if self.text:
            self.out.write("\n")
        self.text = ""

    def rest(self, answer: Any, *, seen: str = "", frames: int = 1) -> str:
        """What is left to print once the answer is complete: any marks, then the footer."""
        from bot.reply import answer_body, footer_line

        body, shown = answer_body(answer), self.text.rstrip()
        tail = body[len(shown) :] if shown and body.startswith(shown) else ("\n" if shown else "") + body
        return f"{tail}\n{footer_line(answer, frames)}" + (f"\n-# {seen}" if seen else "")


async def _ask(
    settings: Settings, image: Path, question: str | None, max_tokens: int | None, live: LivePrinter | None = None
) -> str:
    """The answer as printed (with ``live``: what is left to print after the streamed text)."""
    from bot.engine.base import RequestError
    from bot.images import ImageError
    from bot.queue import Refused
    from bot.reply import render
    from bot.runtime import Runtime

    try:
        data = image.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {image}: {exc.strerror or exc}") from None
    runtime = Runtime(settings)
    # Check the image before paying for the model load.
    try:
        prepared = await runtime.prepare_media(data)
    except ImageError as exc:
        raise BadInput(f"{image.name}: {exc}") from None
    await runtime.start()
    try:
        request = runtime.request(prepared.images, question, max_tokens=max_tokens)
        handle = runtime.submit(request, user_id="cli", on_text=live, on_restart=live.restart if live else None)
        answer = await handle.result()
    except (Refused, RequestError) as exc:
        raise BadInput(str(exc)) from None
    finally:
        await runtime.close()
    seen, frames = prepared.describe(), prepared.frames
    return live.rest(answer, seen=seen, frames=frames) if live is not None else render(answer, seen=seen, frames=frames)


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.log_level, args.verbose)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise BadInput("--max-tokens must be at least 1")
    live = LivePrinter(sys.stdout) if sys.stdout.isatty() else None  # stream to a terminal; a pipe gets the whole answer
    text = asyncio.run(_ask(settings, Path(args.image), args.question, args.max_tokens, live))
    print(text)
    return EXIT_OK


# -- doctor -------------------------------------------------------------------


def _row(label: str, value: object) -> None:
    print(f"  {label:<22} {value}")


def cmd_doctor(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.log_level, args.verbose)
    import llama_cpp

    from bot.reply import footer_line
    from bot.runtime import build_engine, resolve_model

    offload = bool(llama_cpp.llama_supports_gpu_offload())
    print("llava-bot doctor")
    _row("llama-cpp-python", llama_cpp.__version__)
    _row("GPU offload in build", "yes" if offload else "no (CPU-only build)")
    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    _row("llama.cpp system info", system_info[:200])
    files = resolve_model(settings)
    kind = " (built-in tiny random model: answers are random text)" if files.builtin else ""
    _row("model", f"{files.path}{kind}")
    _row("mmproj", files.mmproj)
    _row("model.chat_format", settings.model.chat_format)
    _row("n_gpu_layers / n_ctx", f"{settings.model.n_gpu_layers} / {settings.model.n_ctx}")
    engine = build_engine(settings, files)
    try:
        engine.load()
        warm = engine.warmup_answer or engine.warmup()
        info = engine.info
        _row("loaded in", f"{engine.load_s:.2f} s")
        _row("text model ran on", info.text_backend)
        _row("CLIP ran on", info.clip_backend)
        _row("chat template", info.template)
        if engine.repack is not None:
            _row("CPU weights", engine.repack.line())
        slots = engine.parallel
        _row(
            "KV cache",
            f"about {engine.kv_memory_bytes() / 1e6:.0f} MB: {slots} slot{'s' if slots > 1 else ''} "
            f"(model.parallel) x n_ctx {engine.n_ctx} tokens each",
        )
        if engine.projector.dynamic:
            _row("image budget", f"{engine.image_token_budget()} tokens an image (images.max_image_tokens)")
        _row("warm-up question", footer_line(warm).removeprefix("-# "))
    finally:
        engine.close()

    advice: list[str] = []
    if not offload:
        advice.append(f"this llama-cpp-python build cannot use a GPU; for NVIDIA GPUs reinstall with CUDA:\n      {CUDA_REINSTALL}")
    elif settings.model.n_gpu_layers == 0:
        advice.append("model.n_gpu_layers is 0: the text model stays on the CPU; set -1 to offload all layers")
    if info.text_backend != "CPU" and info.clip_backend == "CPU":
        advice.append(
            "CLIP runs on the CPU while the text model is on a GPU: image encoding will dominate; "
            "reinstall llama-cpp-python with CUDA (the mmproj is loaded with use_gpu)"
        )
    if files.builtin:
        advice.append("no model.path set: see README 'Run it for real' for LLaVA-1.5 GGUF files")
    for line in advice:
        print(f"  ! {line}")
    if not advice:
        print("  ok")
    return EXIT_OK


# -- run ------------------------------------------------------------------------


async def _run(settings: Settings, token: str, sync: bool) -> None:
    import signal

    from bot.client import make_bot, point_at
    from bot.jobs.journal import Journal
    from bot.metrics import Metrics
    from bot.runtime import Runtime

    point_at(settings.discord.api_base, settings.discord.gateway_url)
    runtime = Runtime(settings)
    metrics = Metrics(runtime)
    if settings.metrics.port is not None:
        await metrics.start(settings.metrics.host, settings.metrics.port)  # /healthz says 503 until ready
    await runtime.start()  # load and warm the model before connecting
    for engine in runtime.engines:
        info = engine.info
        log.info("model ready: %s (%s), text on %s, CLIP on %s", info.model, info.chat_format, info.text_backend, info.clip_backend)
    web = await _start_web(settings, runtime)
    journal = Journal(settings.state.path if settings.state.journal else None)
    bot = make_bot(settings, runtime, sync_commands=sync or settings.discord.sync_commands, journal=journal)
    metrics.bot = bot
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    clean = True
    try:
        async with bot:
            runner = asyncio.create_task(bot.start(token), name="discord")
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if runner.done():
                runner.result()  # a login failure or a crash: raise it
            else:
                clean = await _stop_gracefully(bot, runtime, settings.queue.shutdown_timeout_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if web is not None:
            await web.stop()
        if clean:
            await runtime.close()
        await metrics.stop()
        log.info("stopped")


async def _start_web(settings: Settings, runtime: Runtime) -> WebServer | None:
    """With ``web.enabled``: the playground beside the bot, on the same runtime."""
    if not settings.web.enabled:
        return None
    from bot.web import WebServer

    web = WebServer(runtime, settings.web)
    await web.start()
    return web


async def _stop_gracefully(bot: LlavaBot, runtime: Runtime, bound: float) -> bool:
    """Stop taking questions and finish within ``bound`` seconds.

    The running answer gets most of ``bound`` to finish and be delivered;
    then its generation is stopped between two tokens.  With a journal,
    questions not answered by then (waiting, downloading, or cut short) stay
    in it and are answered after the restart; without one, they are told the
    bot is restarting.  True if everything finished within ``bound``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    park = bot.journal.enabled
    log.info(
        "stopping: %d waiting question(s) %s; finishing the running one",
        runtime.queue.stats().depth,
        "stay in the journal for the next start" if park else "are told the bot is restarting",
    )
    closing = asyncio.create_task(runtime.queue.close(RESTARTING, park=park))
    try:
        # leave a fifth of the time (at most 5 s) for the last replies and notes
        _, pending = await asyncio.wait({closing}, timeout=bound - min(5.0, bound / 5))
        if pending:
            log.warning("the running answer is not done; stopping its generation")
            runtime.queue.stop_running()
        await asyncio.wait_for(asyncio.shield(closing), max(0.1, deadline - loop.time()))
        await asyncio.wait_for(bot.wait_idle(), max(0.1, deadline - loop.time()))
    except TimeoutError:
        runtime.queue.stop_running()
        log.warning("gave up waiting after %.0f s; %d job(s) still in flight", bound, bot.jobs_in_flight)
        return False
    finally:
        left = await bot.journal.park()
        if left:
            log.info("%d job(s) stay in the journal for the next start", left)
        await bot.close()
    return True


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.log_level, args.verbose, settings.log_format)
    if settings.discord.token is None:
        raise BadInput("no Discord bot token: set the DISCORD_TOKEN environment variable (see README)")
    if settings.web.enabled:
        from bot.web import check_bind

        check_bind(settings.web)  # before the model loads
    import discord

    token = settings.discord.token.get_secret_value()
    try:
        asyncio.run(_run(settings, token, args.sync))
    except discord.LoginFailure as exc:
        raise BadInput(f"Discord refused the token: {exc}") from None
    return EXIT_OK


# -- serve ----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """The playground alone: the model, the queue and the limits, and a web page."""
    overrides = _model_overrides(args)
    web = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    if web:
        overrides["web"] = web
    settings = load_settings(args.config, overrides=overrides)
    _setup_logging(settings.log_level, args.verbose, settings.log_format)
    from bot.web import check_bind, serve

    check_bind(settings.web)  # before the model loads

    def announce(url: str) -> None:
        print(f"llava-bot: playground at {url} (Ctrl-C to stop)", flush=True)

    asyncio.run(serve(settings, announce))
    return EXIT_OK


# -- bench ----------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from bot.bench.run import run_bench, table

    settings = _settings(args)
    _setup_logging("WARNING", args.verbose)

    def progress(step: str) -> None:
        if not args.json:
            print(f"  … {step}", file=sys.stderr, flush=True)

    if args.parallel:
        from bot.bench.parallel import run_parallel
        from bot.bench.parallel import table as parallel_table

        progress(f"{args.requests} questions with 1 slot, then with {args.parallel}")
        result = run_parallel(settings, args.parallel, questions=args.requests, max_tokens=args.max_tokens)
        print(json.dumps(result, indent=2) if args.json else parallel_table(result))
        return EXIT_OK
    if args.scale_out:
        from bot.bench.scale_out import run_scale_out

        result = asyncio.run(run_scale_out(settings, progress=progress))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"scaling out ({result['scale_questions']} questions, max_tokens {result['scale_max_tokens']}, "
                "llama-cpp-python servers on loopback, 1 thread each):\n"
                f"  1 endpoint:  {result['throughput_1_endpoint_per_s']} answers/s\n"
                f"  2 endpoints: {result['throughput_2_endpoints_per_s']} answers/s  ({result['scale_out_ratio']}x)"
            )
        return EXIT_OK
    result = asyncio.run(run_bench(settings, requests=args.requests, max_tokens=args.max_tokens, progress=progress))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return EXIT_OK


# -- entry point ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-bot", description="A Discord bot that answers questions about images with a local LLaVA model.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="TOML settings file (default: config/bot.toml if present)")
        p.add_argument("--model", metavar="PATH", help="GGUF text model (model.path)")
        p.add_argument("--mmproj", metavar="PATH", help="GGUF CLIP projector (model.mmproj)")
        p.add_argument("--chat-format", metavar="NAME", help="model.chat_format, e.g. llava-1-5, llava-1-6")
        p.add_argument("--n-gpu-layers", type=int, metavar="N", help="model.n_gpu_layers (-1: all)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging, llama.cpp's included")

    ask = sub.add_parser("ask", help="answer one question about one image, with the timing footer")
    ask.add_argument("image", help="image file (JPEG, PNG, WebP, GIF, ...)")
    ask.add_argument("question", nargs="?", help='the question (default: "Describe this image.")')
    ask.add_argument("--max-tokens", type=int, metavar="N", help="answer cap (bounded by generation.max_tokens_limit)")
    common(ask)
    ask.set_defaults(func=cmd_ask)

    run = sub.add_parser("run", help="load the model, then connect to Discord and answer")
    run.add_argument("--sync", action="store_true", help="register the slash commands with Discord at start-up")
    common(run)
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="serve the playground: a web page to ask about images (same model, queue, limits)")
    serve.add_argument("--host", metavar="ADDR", help="address to listen on (web.host, default 127.0.0.1; others need web.token)")
    serve.add_argument("--port", type=int, metavar="N", help="port (web.port, default 8765)")
    common(serve)
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser("bench", help="measure what the bot adds on top of the model (see BENCHMARKS.md)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bench.add_argument("--requests", type=int, default=8, metavar="N", help="questions per measurement (default 8)")
    bench.add_argument("--max-tokens", type=int, default=32, metavar="N", help="answer length (default 32)")
    bench.add_argument(
        "--parallel", type=int, default=0, metavar="N",
        help="instead: the questions with 1 slot and with N (model.parallel): seconds, tok/s, one answer's latency",
    )
    bench.add_argument(
        "--scale-out", action="store_true",
        help="instead: throughput with two OpenAI-compatible endpoints vs one (needs llama-cpp-python[server])",
    )
    common(bench)
    bench.set_defaults(func=cmd_bench)

    from bot import fetch_model

    fetch = sub.add_parser("fetch-model", help="download a known vision model (GGUF pair) and write the settings to use it")
    fetch_model.add_arguments(fetch)
    fetch.add_argument("--config", metavar="FILE", help="settings file to write (default: config/bot.toml)")
    fetch.set_defaults(func=fetch_model.cmd_fetch_model)

    doctor = sub.add_parser("doctor", help="check the build, the GPU, the model files and where CLIP runs")
    common(doctor)
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, BadInput) as exc:
        print(f"llava-bot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("llava-bot: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place that turns a bug into exit 1
        log.exception("llava-bot %s failed", args.command)
        print(f"llava-bot: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
