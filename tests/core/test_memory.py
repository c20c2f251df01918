"""The allocator tuning that keeps freed activation memory in the process."""
import ctypes
import os
import subprocess
import sys

import pytest

CHECK = "from uncover.core.memory import tune_allocator; print(tune_allocator())"


def run(env_value: str | None) -> str:
    """tune_allocator() in a fresh process (it applies once per process)."""
    env = {k: v for k, v in os.environ.items() if k != "UNCOVER_MALLOC_TUNING"}
    if env_value is not None:
        env["UNCOVER_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
def test_tuning_applies_on_glibc_and_can_be_switched_off():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert run(None) == "True"
    assert run("0") == "False"
