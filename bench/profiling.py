"""py-spy for the benchmarks: record a process, and rank the frames of a recording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: frames of the project and the libraries on its hot path (scatter-gather's app profile)
PROJECT_FRAMES = ("swarmd", "durabletask", "dapr/", "grpc", "openai", "httpx", "pydantic", "json")


def py_spy(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` into ``out`` (collapsed stacks) until SIGINT, or None
    (and a line saying so) when py-spy is not installed."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("py-spy not installed: no profile", flush=True)
        return None
    cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
    return subprocess.Popen(
        [*cmd, "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(collapsed: Path, keys: tuple[str, ...], k: int = 12) -> list[tuple[str, float]]:
    """Share of all samples per innermost frame matching one of ``keys`` (its own samples
    and those of the non-matching code it calls), line numbers folded, heaviest first."""
    totals: dict[str, int] = {}
    everything = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        everything += n
        for frame in reversed(stack.split(";")):
            if any(key in frame for key in keys):
                name = frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame
                totals[name] = totals.get(name, 0) + n
                break
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:k]
    return [(f, round(100 * c / max(1, everything), 1)) for f, c in ranked]
