"""The app gives large freed blocks back to the system (swarmd.malloc, ``swarmd serve``).

Each case runs in its own interpreter: a big block freed first (glibc then raises its
mmap threshold to that size), then 100 MB of 512 KiB blocks interleaved with small
blocks that stay alive, then the large blocks freed. With glibc's dynamic threshold
the freed memory stays resident behind the small blocks; with the threshold fixed it
is returned.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from pathlib import Path
from swarmd.malloc import fix_mmap_threshold

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

took = fix_mmap_threshold(int(sys.argv[1]))
base = rss_mb()
first = b"x" * (4 << 20)
del first
big, keep = [], []
for i in range(200):
    big.append(bytes([i % 256]) * (512 * 1024))
    keep.append(bytes([i % 256]) * 2048)
peak = rss_mb()
del big
print(took, round(peak - base), round(rss_mb() - base))
"""


def run(threshold: int) -> tuple[bool, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threshold)], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_freed_large_blocks_leave_the_process_with_the_fixed_threshold() -> None:
    took, peak, after = run(64 * 1024)
    assert took
    assert peak >= 90  # the blocks were really resident
    assert after <= 10, f"{after} MB still resident after freeing {peak} MB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_with_glibcs_dynamic_threshold_they_stay_resident() -> None:
    """The control: what the app did before (SWARMD_MALLOC_MMAP_THRESHOLD=0)."""
    took, peak, after = run(0)
    assert not took
    assert peak >= 90
    assert after >= 80, f"only {after} of {peak} MB stayed: the default no longer fragments"
