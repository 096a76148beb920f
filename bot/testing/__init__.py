"""Loopback stand-ins for benchmarks and tests: a local fake Discord server
(``fake_discord``) and a helper that runs llava-bot against it (``harness``).
Nothing here is used when the bot runs for real."""
