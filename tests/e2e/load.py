"""Load test: many users asking faster than the model answers, through the
fake Discord, with the real engine on the tiny model.

    python -m tests.e2e.load --questions 1000 --users 100
    python -m tests.e2e.load --questions 300 --users 300 --corpus odd --max-tokens 24 --product-queue

``--corpus odd`` cycles through odd images people post (animated GIF/PNG/WebP,
CMYK, 16-bit grey, palette with transparency, EXIF-rotated) and files that are
not images, damaged or too big (:mod:`tests.e2e.odd_images`); ``--product-queue``
keeps the queue limits users get instead of this test's small ones.  Answers
stream in, as they do for users.

Every question must end in exactly one bot message: an answer (with the
footer) if the queue accepted it, one refusal line if not; none may get two.
It prints the counts, the process's RSS before and after, and the gateway
heartbeats (a blocked event loop would miss them and reconnect).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from bot.testing.fake_discord import BOT_ID, GENERAL_ID, FakeDiscord
from bot.testing.harness import running_bot
from tests.e2e.helpers import settled
from tests.e2e.odd_images import CASES

FIRST_USER_ID = 100_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pictures(n: int) -> list[bytes]:
    out = []
    rng = random.Random(7)
    for _ in range(n):
        img = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(300), rng.randrange(220)
            draw.ellipse((x, y, x + 40, y + 30), fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


@dataclass
class LoadResult:
    questions: int
    users: int
    answered: int
    refused: int
    unanswered: int
    duplicated: int
    refusal_reasons: dict[str, int]
    served_by_queue: int
    seconds: float
    questions_per_s: float
    rss_mb_before: float
    rss_mb_after: float
    heartbeats: int
    identifies: int
    resumes: int


def final_contents(fake: FakeDiscord) -> tuple[dict[str, list[str]], dict[int, str]]:
    """Bot messages per question id, and the latest content of each bot message."""
    latest: dict[int, str] = {}
    per_question: dict[str, list[int]] = defaultdict(list)
    for record in fake.sent:
        latest[record["id"]] = record["content"]
        reference = record.get("message_reference")
        if record["via"] == "channel" and reference:
            per_question[str(reference["message_id"])].append(record["id"])
    return {q: [latest[m] for m in ids] for q, ids in per_question.items()}, latest


async def run_load(
    fake: FakeDiscord,
    model: tuple[Path, Path],
    state_dir: Path,
    *,
    questions: int,
    users: int,
    max_size: int | None = 32,
    per_user: int = 2,
    corpus: str = "plain",
    max_tokens: int = 16,
) -> LoadResult:
    """``max_size=None``: the queue limits users get (the product's defaults)."""
    for n in range(users):
        fake.add_user(FIRST_USER_ID + n, f"user{n}")
    fake.heartbeat_interval = 500  # ms: a blocked loop would miss several
    if corpus == "odd":
        files = [(name, data, ctype, size) for name, data, ctype, size, _, _ in CASES]
    else:
        files = [("q.jpg", data, None, None) for data in pictures(8)]
    queue = {} if max_size is None else {"max_size": max_size, "per_user": per_user, "per_user_per_minute": 0}
    async with running_bot(
        fake, model, state_dir, queue=queue, generation={"max_tokens": max_tokens, "max_tokens_limit": max(64, max_tokens)}
    ) as (bot, runtime):
        rss_before = rss_mb()
        beats_before = fake.heartbeats
        asked: list[str] = []
        started = time.perf_counter()
        for i in range(questions):
            user = FIRST_USER_ID + (i % users)
            name, data, ctype, size = files[i % len(files)]
            att = fake.add_attachment(f"q{i}-{name}", data, ctype, size)
            msg = await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> what is this?", attachments=[att], mentions_bot=True)
            asked.append(msg["id"])

        def all_done() -> bool:
            per_q, latest = final_contents(fake)
            return (
                bot.jobs_in_flight == 0
                and all(per_q.get(q) for q in asked)
                and not any(c.startswith("⏳") for c in latest.values())
            )

        await fake.wait_until(all_done, timeout=600, what="every question answered or refused")
        elapsed = time.perf_counter() - started
        await settled(fake, bot)  # let any duplicate show itself
        rss_after = rss_mb()
        served = runtime.queue.stats().served
        per_q, _ = final_contents(fake)

    answered = refused = unanswered = duplicated = 0
    reasons: Counter[str] = Counter()
    for q in asked:
        replies = per_q.get(q, [])
        if not replies:
            unanswered += 1
            continue
        if len(replies) > 1:
            duplicated += 1
        if "\n-# ⏱ " in replies[0]:
            answered += 1
        elif replies[0].startswith("⚠️"):
            refused += 1
            reasons[replies[0].split(",")[0].split(";")[0]] += 1
        else:
            unanswered += 1
    return LoadResult(
        questions=questions,
        users=users,
        answered=answered,
        refused=refused,
        unanswered=unanswered,
        duplicated=duplicated,
        refusal_reasons=dict(reasons),
        served_by_queue=served,
        seconds=round(elapsed, 2),
        questions_per_s=round(questions / elapsed, 1),
        rss_mb_before=round(rss_before, 1),
        rss_mb_after=round(rss_after, 1),
        heartbeats=fake.heartbeats - beats_before,
        identifies=fake.identifies,
        resumes=fake.resumes,
    )


async def _main(args: argparse.Namespace) -> int:
    from bot.engine.tiny import TINY, ensure_model_pair

    model = ensure_model_pair(TINY)
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeDiscord() as fake:
            import discord.gateway
            import discord.http
            import yarl

            discord.http.Route.BASE = fake.api_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
            result = await run_load(
                fake, model, Path(tmp), questions=args.questions, users=args.users, corpus=args.corpus,
                max_tokens=args.max_tokens, max_size=None if args.product_queue else 32,
            )
    print(json.dumps(asdict(result), indent=2))
    ok = result.unanswered == 0 and result.duplicated == 0 and result.resumes == 0 and result.identifies == 1
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--corpus", choices=("plain", "odd"), default="plain")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--product-queue", action="store_true", help="the queue limits users get")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
