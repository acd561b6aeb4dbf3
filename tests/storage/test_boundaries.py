"""storage/ stays free of discord, so it can be used and tested without a bot."""

from __future__ import annotations

import subprocess
import sys


def test_storage_does_not_import_discord() -> None:
    code = "import sys, storage, storage.store; sys.exit('discord' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
