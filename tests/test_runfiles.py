"""Root-only files in the run directory, and the key a crashed run leaves there."""

from __future__ import annotations

import os
import stat
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from wg_netmanager import runfiles
from wg_netmanager.daemon import crash_kept_key
from wg_netmanager.keys import KeyPair, to_b64

BOB = IPv4Address("10.1.1.16")


def private_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return run


def test_written_root_only_and_read_back(tmp_path: Path) -> None:
    path = str(private_dir(tmp_path) / "wg0.thing")
    runfiles.write_private(path, "hello\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert runfiles.read_private(path, 100) == "hello\n"
    assert runfiles.read_private(path, 3) is None  # larger than allowed
    assert runfiles.read_private(path + ".missing", 100) is None
    os.utime(path, (1.0, 1.0))
    assert runfiles.read_private(path, 100, max_age=60.0) is None  # too old


def test_nothing_read_from_a_directory_others_can_write_or_through_a_link(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "f").write_text("planted")
    assert runfiles.read_private(str(open_dir / "f"), 100) is None
    run = private_dir(tmp_path)
    (run / "link").symlink_to(open_dir / "f")
    try:
        runfiles.read_private(str(run / "link"), 100)
    except OSError:
        pass  # ELOOP: O_NOFOLLOW refuses the link
    else:
        raise AssertionError("read through a link")


def test_a_crashed_runs_key_is_used_again_by_the_same_wg_ip_only(tmp_path: Path) -> None:
    path = str(private_dir(tmp_path) / "wg0.key")
    first, number = crash_kept_key(path, BOB)
    text = Path(path).read_text()
    assert (text, number) == (f"{BOB} {to_b64(first.private)} 0\n", 0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The run crashed (nothing removed the file): the next one takes its key,
    # and counts itself, before it says so to anyone.
    for run in (1, 2):
        again, number = crash_kept_key(path, BOB)
        assert (again.private, number) == (first.private, run)
        assert Path(path).read_text() == f"{BOB} {to_b64(first.private)} {run}\n"
    # Another wg IP gets a key of its own (the old one may still hold a session).
    other, number = crash_kept_key(path, IPv4Address("10.1.1.17"))
    assert other.private != first.private and number == 0
    assert Path(path).read_text().startswith("10.1.1.17 ")


def test_an_older_releases_key_file_is_its_first_run(tmp_path: Path) -> None:
    path = str(private_dir(tmp_path) / "wg0.key")
    kept = KeyPair.generate()
    runfiles.write_private(path, f"{BOB} {to_b64(kept.private)}\n")
    keys, number = crash_kept_key(path, BOB)
    assert (keys.private, number) == (kept.private, 1)


@pytest.mark.parametrize(
    "text", ["not-a-key", "{key} x", "{key} -1", "{key} ²", f"{{key}} {2**63 - 1}"]
)
def test_a_damaged_key_file_gives_a_new_key(tmp_path: Path, text: str) -> None:
    path = str(private_dir(tmp_path) / "wg0.key")
    kept = KeyPair.generate()
    runfiles.write_private(path, f"{BOB} {text.format(key=to_b64(kept.private))}\n")
    keys, number = crash_kept_key(path, BOB)
    assert keys.private != kept.private and number == 0
    assert Path(path).read_text() == f"{BOB} {to_b64(keys.private)} 0\n"


def test_a_run_that_cannot_count_itself_takes_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs with one key and one boot number would look alike to the others."""
    path = str(private_dir(tmp_path) / "wg0.key")
    first, _ = crash_kept_key(path, BOB)

    def refuse(path: str, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runfiles, "write_private", refuse)
    keys, number = crash_kept_key(path, BOB)
    assert keys.private != first.private and number == 0


def test_no_private_directory_no_kept_key_but_a_key(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    keys, number = crash_kept_key(str(open_dir / "wg0.key"), BOB)
    assert len(keys.private) == 32 and number == 0
    assert not (open_dir / "wg0.key").exists()
