"""The local commands and the database lock: `generate` takes it (a bot started meanwhile would take its job for
a crash's leftover), so it is refused while another process has the database; `history` only reads, and works."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bot.cli import main
from storage.lock import DatabaseLock, lock_path


def write_config(folder: Path, model: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'[storage]\npath = "data/imagine.sqlite3"\nimages_dir = "data/images"\n'
        f'[generation]\ndevice = "cpu"\ndefault_model = "tiny"\n'
        f'[[models]]\nname = "tiny"\nsource = "{model}"\nsteps = 2\nwidth = 64\nheight = 64\n'
    )
    return path


def test_generate_takes_the_lock_and_is_refused_while_another_process_has_it(
    tiny_sd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database = write_config(tmp_path, tiny_sd_dir), tmp_path / "data" / "imagine.sqlite3"
    generate = ["generate", "a quiet harbour", "--seed", "3", "--config", str(config)]
    assert main([*generate, "--out", str(tmp_path / "first")]) == 0  # nobody else: it runs
    assert len(list((tmp_path / "first").glob("*.png"))) == 1
    with DatabaseLock.acquire(database, "run") as bot:  # …and let the lock go when it was done
        capsys.readouterr()
        assert main([*generate, "--out", str(tmp_path / "second")]) == 1
        refused = capsys.readouterr().err.strip().splitlines()
        assert refused[-1] == (
            f"imagine-bot: another imagine-bot (`imagine-bot run`, pid {os.getpid()} on {socket.gethostname()}, "
            f"since {bot.holder.since:%Y-%m-%d %H:%M:%S} UTC) is running on the database {database} "
            "([storage] path); stop it first, or give this one a database of its own"
        )
        assert not (tmp_path / "second").exists()  # refused before any work
        assert main(["history", "--config", str(config)]) == 0  # reading needs no lock
        assert "a quiet harbour" in capsys.readouterr().out
    assert lock_path(database).exists()
