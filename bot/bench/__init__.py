"""``llava-bot bench`` and its parts: :mod:`bot.bench.run` (the method and the
whole run), :mod:`bot.bench.parts`, :mod:`bot.bench.stream` (streaming into
Discord), :mod:`bot.bench.parallel` (slots), :mod:`bot.bench.scale_out`
(endpoints), and :mod:`bot.bench.loopback` (the whole bot on a loopback fake
Discord)."""
