"""Whether llama.cpp may repack weights for the CPU here (AMX among them).

llama.cpp's CPU backend offers "extra buffer types": at load time it repacks
quantized matrices into layouts for faster kernels; on a CPU with AMX
(``amx_tile`` in /proc/cpuinfo, 4th-generation Xeon and later) that is the
AMX buffer type.  On some such machines the AMX kernels crash the whole
process (SIGSEGV in ``ggml_backend_amx_mul_mat``, llama-cpp-python 0.3.36)
as soon as a prompt batch holds about 20 tokens or more, for any quantized
model: the first image question would kill the bot.  The model parameter
``use_extra_bufts = False`` (llama.cpp's ``--no-repack``) keeps every matrix
in its plain buffer, which works everywhere.

:func:`decide` settles it once per process from ``model.cpu_repack``:

* ``true`` / ``false``: the operator's choice, no probe;
* ``"auto"`` (default): repacking stays on unless the CPU has AMX *and* this
  llama.cpp build has AMX kernels; then a child process (:func:`probe`) loads
  a small Q8_0 model and evaluates a 64-token prompt.  If the child dies,
  repacking is turned off.  The verdict is cached per machine and llama.cpp
  build (``cpu-repack.json`` in the cache folder), so the probe (about a
  second) runs once.

GPU layers are not affected: only matrices that stay on the CPU are repacked.

``Llama()`` has no argument for ``use_extra_bufts``; :func:`model_params_patch`
sets it for one construction by wrapping ``llama_model_default_params``, the
function ``Llama.__init__`` starts its model parameters from (pinned:
llama-cpp-python 0.3.x; see :func:`bot.engine.native.model_params_changed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bot.engine import native
from bot.engine.tiny import TINY, ensure_model_pair

log = logging.getLogger(__name__)

CpuRepack = Literal["auto"] | bool

#: the probe's prompt: about 64 tokens, well past the ~20 at which the AMX kernels crashed
_PROBE_PROMPT = " ".join(["the small red car is on the table with a white cat"] * 5)
_PROBE_TIMEOUT_S = 120.0
_CACHE_FILE = "cpu-repack.json"


@dataclass(frozen=True)
class RepackDecision:
    """What was decided and why, in words for ``doctor`` and the start-up log."""

    repack: bool
    amx_cpu: bool
    amx_build: bool
    #: "setting", "no-amx-cpu", "no-amx-build", "works", "crashes", "timeout", "failed"
    reason: str
    cached: bool = False

    def line(self) -> str:
        state = "repacking on" if self.repack else "repacking off"
        if self.reason == "setting":
            return f"{state} (model.cpu_repack = {'true' if self.repack else 'false'})"
        if self.reason == "no-amx-cpu":
            return f"AMX: not in this CPU; {state}"
        if self.reason == "no-amx-build":
            return f"AMX: in this CPU, not in this llama.cpp build; {state}"
        how = " (cached verdict)" if self.cached else ""
        if self.reason == "works":
            return f"AMX: present and works here{how}; {state}"
        if self.reason == "timeout":
            return f"AMX: present, its probe hung here{how}; {state}"
        if self.reason == "failed":
            return f"AMX: present, its probe could not run; {state} to be safe"
        return f"AMX: present but crashes here{how}; {state}"


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_tile" in line.split() for line in text.splitlines())


def build_has_amx() -> bool:
    return "AMX_INT8 = 1" in native.system_info()


def _machine_key() -> str:
    """The CPU, the llama-cpp-python version and its native library: a new build or CPU probes again."""
    parts = [native.version(), native.system_info()]
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "flags")):
                parts.append(line)
                break
    except OSError:
        pass
    for lib in native.library_files():
        st = lib.stat()
        parts.append(f"{lib.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    verdict = data.get(key) if isinstance(data, dict) else None
    return verdict if verdict in ("works", "crashes", "timeout") else None


def _write_cache(path: Path, key: str, verdict: str) -> None:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = verdict
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not keep the CPU repacking verdict in %s: %s", path, exc)


def probe(cache_dir: Path, command: list[str] | None = None) -> str:
    """Run the AMX path in a child process: "works", "crashes" or "timeout".

    ``command`` replaces the child's command line (tests); it must print
    "probe ok" and exit 0 to count as working.
    """
    # the CPU's kernels, not the GPU's; this very copy of the bot package
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command or [sys.executable, "-m", "bot.engine.cpu_repack", "--probe", str(cache_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        log.warning("the AMX probe did not finish in %.0f s", _PROBE_TIMEOUT_S)
        return "timeout"
    took = time.perf_counter() - started
    if done.returncode == 0 and "probe ok" in done.stdout:
        log.info("AMX probe: works here (%.2f s)", took)
        return "works"
    tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
    if done.returncode < 0:
        log.warning("AMX probe: the child process died (signal %d) in %.2f s", -done.returncode, took)
        return "crashes"
    log.warning("AMX probe: could not run (exit status %d): %s", done.returncode, tail[0][:200])
    return "failed"


_decided: dict[tuple[str, str], RepackDecision] = {}
_decide_lock = threading.Lock()


def decide(setting: CpuRepack, cache_dir: Path) -> RepackDecision:
    """Settle ``use_extra_bufts`` for this process (see the module docstring)."""
    amx_cpu = cpu_has_amx()
    if setting is True or setting is False:
        return RepackDecision(bool(setting), amx_cpu, amx_cpu and build_has_amx(), "setting")
    if not amx_cpu:
        return RepackDecision(True, False, False, "no-amx-cpu")
    if not build_has_amx():
        return RepackDecision(True, True, False, "no-amx-build")
    key = _machine_key()
    with _decide_lock:
        memo = _decided.get((key, str(cache_dir)))
        if memo is not None:
            return memo
        cache = cache_dir / _CACHE_FILE
        verdict = _read_cache(cache, key)
        cached = verdict is not None
        if verdict is None:
            verdict = probe(cache_dir)
            if verdict != "failed":  # a probe that could not run is tried again next start
                _write_cache(cache, key, verdict)
        decision = RepackDecision(verdict == "works", True, True, verdict, cached)
        _decided[(key, str(cache_dir))] = decision
        return decision


_patch_lock = threading.Lock()


@contextlib.contextmanager
def model_params_patch(repack: bool) -> Iterator[None]:
    """Construct ``Llama`` inside this block to load with ``use_extra_bufts = repack``."""
    if repack:
        yield
        return
    with _patch_lock:
        with native.model_params_changed(_without_repack) as used:
            yield
        if not used:
            raise RuntimeError(
                "this llama-cpp-python did not take its model parameters from llama_model_default_params: "
                "CPU repacking could not be turned off (llava-bot supports llama-cpp-python 0.3.x)"
            )


def _without_repack(params: Any) -> None:
    params.use_extra_bufts = False


def _probe_child(cache_dir: Path) -> int:
    """In the child: a small Q8_0 model with repacking on, a 64-token prompt. Dies if AMX does."""
    text_model, _ = ensure_model_pair(TINY, cache_dir)
    quantized = cache_dir / f"{text_model.stem}-q8_0-probe.gguf"
    if not quantized.is_file():
        tmp = quantized.with_suffix(f".{os.getpid()}.tmp")
        if not native.quantize_q8_0(text_model, tmp):
            print("quantize failed", file=sys.stderr)
            return 3
        os.replace(tmp, quantized)
    llm = native.new_llama(model_path=str(quantized), n_ctx=256, n_batch=256, n_gpu_layers=0, verbose=False)
    tokens = llm.tokenize(_PROBE_PROMPT.encode())
    llm.eval(tokens)
    llm.close()
    print(f"probe ok ({len(tokens)} tokens)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        raise SystemExit(_probe_child(Path(sys.argv[2])))
    print("usage: python -m bot.engine.cpu_repack --probe CACHE_DIR", file=sys.stderr)
    raise SystemExit(2)
