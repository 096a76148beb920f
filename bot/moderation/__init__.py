"""Moderation assist: :mod:`~bot.moderation.checker` (rules asked of the model),
:mod:`~bot.moderation.watcher` (watched images, from the message to every post),
:mod:`~bot.moderation.alerts` (alert posts and their buttons) and
:mod:`~bot.moderation.captions` (the FTS5 store behind ``/find``)."""
