"""What the native libraries say: their log lines into Python logging, and where the model runs.

llama.cpp, ggml and mtmd print progress on every call.  :class:`NativeLogs`
routes all of it to the ``llava_bot.llama_cpp`` logger (debug) through their
log callbacks, so the terminal stays clean without redirecting the process's
stdout/stderr, and keeps the last lines so that :func:`read_backends` can tell
where the text model and the CLIP encoder run.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections import deque
from dataclasses import dataclass

from bot.engine.native import LIB, MTMD

native_log = logging.getLogger("llava_bot.llama_cpp")


class NativeLogs:
    """Routes llama.cpp, ggml and mtmd log output into Python logging.

    Installed once per process (the callbacks are process-wide in the C
    libraries).  Keeps the last lines so an engine can read what the
    libraries said about devices and backends.
    """

    _instance: NativeLogs | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=4000)
        self.count = 0  # lines ever seen (the deque forgets old ones)
        self._partial = ""

        @LIB.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            self._feed(text)

        self._callback = callback  # keep a reference: C holds only the pointer
        LIB.llama_log_set(callback, ctypes.c_void_p(0))
        MTMD.mtmd_log_set(callback, ctypes.c_void_p(0))
        MTMD.mtmd_helper_log_set(callback, ctypes.c_void_p(0))

    def _feed(self, text: bytes) -> None:
        try:
            chunk = text.decode("utf-8", errors="replace")
        except Exception:  # never raise into C
            return
        data = self._partial + chunk
        *complete, self._partial = data.split("\n")
        for line in complete:
            if line.strip():
                self.lines.append(line)
                self.count += 1
                native_log.debug("%s", line)

    @classmethod
    def install(cls) -> NativeLogs:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def mark(self) -> int:
        return self.count

    def since(self, mark: int) -> list[str]:
        """The lines logged after ``mark`` (as many as are still kept)."""
        new = min(self.count - mark, len(self.lines))
        return list(self.lines)[len(self.lines) - new :] if new > 0 else []


@dataclass(slots=True)
class Backends:
    """Where the text model and the CLIP encoder run, in words."""

    text: str = "CPU"
    clip: str = "unknown"
    gpu_offload: bool = False


def read_backends(lines: list[str], gpu_offload_supported: bool, n_gpu_layers: int) -> Backends:
    """The backends the load's log ``lines`` name (``CLIP using ...``, ``offloaded n/m layers``)."""
    found = Backends(gpu_offload=gpu_offload_supported and n_gpu_layers != 0)
    devices: list[str] = []
    offloaded = None
    for line in lines:
        if m := re.search(r"CLIP using (\S+) backend", line):
            found.clip = m.group(1)
        elif m := re.search(r"using device (\S+) \(([^)]*)\)", line):
            devices.append(f"{m.group(1)} ({m.group(2)})")
        elif m := re.search(r"offloaded (\d+)/(\d+) layers to GPU", line):
            offloaded = (int(m.group(1)), int(m.group(2)))
    if found.gpu_offload and offloaded and offloaded[0] > 0:
        where = ", ".join(devices) or "GPU"
        found.text = f"{where}, {offloaded[0]}/{offloaded[1]} layers"
    else:
        found.text = "CPU"
    return found
