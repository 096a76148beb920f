"""CPU weight repacking (AMX): the probe, its cached verdict, the setting, and quantized models through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.engine import cpu_repack
from bot.engine.cpu_repack import RepackDecision, decide, probe

from .test_cli import EXAMPLE, FOOTER, ROOT, run


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No decision remembered from earlier tests in this process."""
    monkeypatch.setattr(cpu_repack, "_decided", {})


def test_lines_say_what_was_decided_and_why() -> None:
    assert RepackDecision(False, True, True, "crashes").line() == "AMX: present but crashes here; repacking off"
    assert (
        RepackDecision(True, True, True, "works", cached=True).line()
        == "AMX: present and works here (cached verdict); repacking on"
    )
    assert RepackDecision(True, False, False, "no-amx-cpu").line() == "AMX: not in this CPU; repacking on"
    assert (
        RepackDecision(True, True, False, "no-amx-build").line() == "AMX: in this CPU, not in this llama.cpp build; repacking on"
    )
    assert RepackDecision(False, True, True, "setting").line() == "repacking off (model.cpu_repack = false)"


def test_probe_tells_a_dying_child_from_a_working_one(tmp_path: Path) -> None:
    segv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    assert probe(tmp_path, command=segv) == "crashes"
    assert probe(tmp_path, command=[sys.executable, "-c", "print('probe ok (64 tokens)')"]) == "works"
    assert probe(tmp_path, command=[sys.executable, "-c", "raise SystemExit(3)"]) == "failed"  # not a crash: no verdict


def test_a_set_value_never_probes(tmp_path: Path, fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_repack, "probe", lambda *a, **k: pytest.fail("probed"))
    assert decide(False, tmp_path).repack is False
    assert decide(True, tmp_path).repack is True
    assert not (tmp_path / "cpu-repack.json").exists()


def test_auto_probes_once_per_machine_and_keeps_the_verdict(tmp_path: Path, fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_probe(cache_dir: Path) -> str:
        calls.append(cache_dir)
        return "crashes"

    monkeypatch.setattr(cpu_repack, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(cpu_repack, "build_has_amx", lambda: True)
    monkeypatch.setattr(cpu_repack, "probe", fake_probe)
    first = decide("auto", tmp_path)
    assert (first.repack, first.reason, first.cached) == (False, "crashes", False)
    monkeypatch.setattr(cpu_repack, "_decided", {})  # a new process: only the file remains
    again = decide("auto", tmp_path)
    assert (again.repack, again.reason, again.cached) == (False, "crashes", True)
    assert calls == [tmp_path]
    monkeypatch.setattr(cpu_repack, "_decided", {})
    monkeypatch.setattr(cpu_repack, "_machine_key", lambda: "another build")
    assert decide("auto", tmp_path).cached is False and len(calls) == 2


def test_no_amx_no_probe(tmp_path: Path, fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_repack, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(cpu_repack, "probe", lambda *a, **k: pytest.fail("probed"))
    assert decide("auto", tmp_path) == RepackDecision(True, False, False, "no-amx-cpu")


def test_cpuinfo_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    assert cpu_repack.cpu_has_amx(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_tilex\n")
    assert not cpu_repack.cpu_has_amx(info)


@pytest.fixture(scope="module")
def quantized(tiny_pair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny text model quantized to Q8_0 by llama.cpp's own quantizer."""
    import llama_cpp

    path = tmp_path_factory.mktemp("q8") / "llava-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert llama_cpp.llama_model_quantize(str(tiny_pair[0]).encode(), str(path).encode(), params) == 0
    return path


@pytest.mark.parametrize("setting", ["auto", "false"])
@pytest.mark.slow
def test_quantized_model_answers_and_doctor_says_how(quantized: Path, tiny_pair, setting: str) -> None:
    """The README's path on a quantized pair: ``auto`` (the default) and ``false`` both answer on any CPU."""
    env = {"LLAVA_BOT_MODEL__CPU_REPACK": setting}
    done = run(
        "ask",
        str(EXAMPLE),
        "What is in the picture? " * 8,
        "--model",
        str(quantized),
        "--mmproj",
        str(tiny_pair[1]),
        "--max-tokens",
        "8",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert FOOTER.match(done.stdout.rstrip("\n").split("\n")[-1])
    done = run("doctor", "--model", str(quantized), "--mmproj", str(tiny_pair[1]), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("CPU weights"))
    if setting == "false":
        assert line.endswith("repacking off (model.cpu_repack = false)")
    else:
        assert "AMX:" in line


def test_the_probe_verdict_matches_what_the_cpu_does(quantized: Path, private_cache: Path, monkeypatch) -> None:
    """On a CPU with AMX in the build, the real probe's verdict is what a quantized model
    with repacking on actually does here (in a child: a crash takes only the child)."""
    if not (cpu_repack.cpu_has_amx() and cpu_repack.build_has_amx()):
        pytest.skip("this CPU or llama.cpp build has no AMX: nothing to probe")
    verdict = probe(private_cache)
    code = (
        "import sys, llama_cpp\n"
        f"llm = llama_cpp.Llama(model_path={str(quantized)!r}, n_ctx=256, n_gpu_layers=0, verbose=False)\n"
        "llm.eval(llm.tokenize(b' the small red car is on the table with a white cat' * 5))\n"
        "print('evaluated')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    if verdict == "works":
        assert done.returncode == 0 and "evaluated" in done.stdout
    else:
        assert verdict == "crashes" and done.returncode != 0
