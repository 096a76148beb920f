"""A question's whole life: :mod:`~bot.jobs.spec` (plain data), :mod:`~bot.jobs.jobs`
(admission, journal, replay), :mod:`~bot.jobs.journal`, :mod:`~bot.jobs.delivery`
(idempotent reply parts), :mod:`~bot.jobs.streaming` and :mod:`~bot.jobs.in_flight`."""
