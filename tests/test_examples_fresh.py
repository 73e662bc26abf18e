"""The committed example modules are exactly what their C sources build to (serve needs no compiler)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_committed_examples_match_their_sources() -> None:
    result = subprocess.run([sys.executable, "scripts/build_guests.py", "--check", "--zig-cache",
                             str(REPO / ".cache" / "zig")], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
