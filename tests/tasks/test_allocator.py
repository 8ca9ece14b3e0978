"""The entry scripts' allocator settings: set once by re-executing the process, never over the user's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks.allocator import MALLOC_SETTINGS, OPT_OUT, wants_reexec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = (
    "import os, sys\n"
    "print('started', flush=True)\n"
    "from tasks.allocator import reexec_with_malloc_settings\n"
    "reexec_with_malloc_settings()\n"
    "print(os.environ.get('MALLOC_MMAP_THRESHOLD_'), os.environ.get('MALLOC_TRIM_THRESHOLD_'), sys.argv[1:])\n"
)


def _run(extra_env: dict[str, str]) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key not in MALLOC_SETTINGS and key != OPT_OUT}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "--flag", "x"],
        cwd=REPO,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.splitlines()


@pytest.mark.skipif(not wants_reexec({}), reason="Linux with glibc only")
def test_the_process_restarts_once_with_the_settings_and_its_arguments() -> None:
    value = str(1 << 32)
    assert _run({}) == ["started", "started", f"{value} {value} ['--flag', 'x']"]


@pytest.mark.skipif(not wants_reexec({}), reason="Linux with glibc only")
def test_a_users_setting_or_the_opt_out_is_left_alone() -> None:
    assert _run({"MALLOC_TRIM_THRESHOLD_": "5"}) == ["started", "None 5 ['--flag', 'x']"]
    assert _run({OPT_OUT: "1"}) == ["started", "None None ['--flag', 'x']"]
