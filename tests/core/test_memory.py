"""The allocator tuning that keeps freed activation memory in the process."""
import ctypes
import os
import subprocess
import sys

import pytest

# Allocate and touch 200 MiB (a big activation cache), free it, and report how much of it the process
# still holds: with the tuning glibc keeps it for reuse, with its defaults (mmap) it goes back at once.
CHECK = """
import torch
from uncover.core.memory import tune_allocator
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
tuned = tune_allocator()
before = rss()
t = torch.ones(50 * 2**20)
del t
print(tuned, (rss() - before) / 2**20)
"""


def run(env_value: str | None) -> tuple[str, float]:
    """tune_allocator() in a fresh process (it applies once per process): (its result, MiB kept after free)."""
    env = {k: v for k, v in os.environ.items() if k != "UNCOVER_MALLOC_TUNING"}
    if env_value is not None:
        env["UNCOVER_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True).stdout
    tuned, kept = out.split()
    return tuned, float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
def test_tuning_keeps_freed_memory_and_can_be_switched_off():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    tuned, kept = run(None)
    assert tuned == "True" and kept > 150  # the freed 200 MiB stays in the process for the next forward
    default, returned = run("0")
    assert default == "False" and returned < 50  # glibc's default hands it back to the kernel


UNTUNE = CHECK.replace("tuned = tune_allocator()", "tune_allocator()\nfrom uncover.core.memory import "
                       "keep_no_freed_memory\ntuned = keep_no_freed_memory() and not tune_allocator()")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
def test_keep_no_freed_memory_hands_it_back_and_stays():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k != "UNCOVER_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", UNTUNE], env=env, capture_output=True, text=True, check=True).stdout
    accepted, kept = out.split()
    assert accepted == "True" and float(kept) < 50  # the tuning is undone, and a later model does not redo it
