"""QR codes read back as a phone's camera would: Debian's ``zbarimg`` (zbar-tools).

``read`` decodes every QR code in a PNG (a screenshot, or a picture made
here); ``png_of_terminal`` turns the half-block rendering that ``client add
--qr`` prints into such a picture, black modules on white.
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

ZBARIMG = "/usr/bin/zbarimg"

# The terminal rendering (segno's compact form): a character is two modules,
# top and bottom; a block is the terminal's foreground, i.e. light.
_HALVES = {"█": (False, False), " ": (True, True), "▀": (False, True), "▄": (True, False)}


def available() -> str | None:
    """None if QR codes can be read here, else what is missing."""
    if not os.access(ZBARIMG, os.X_OK):
        return f"{ZBARIMG} (Debian package zbar-tools; run scripts/install.sh)"
    return None


def read(png: Path) -> str | None:
    """The text of the QR code in ``png`` (None: no code found)."""
    res = subprocess.run(
        [ZBARIMG, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if res.returncode == 4:  # no code found
        return None
    if res.returncode != 0:
        raise RuntimeError(f"zbarimg {png}: exit {res.returncode}: {res.stderr.decode()}")
    return res.stdout.decode().removesuffix("\n")  # (zbarimg ends each code with one)


def png_of_terminal(text: str, scale: int = 4) -> bytes:
    """The terminal rendering ``text`` as a grayscale PNG, ``scale`` pixels a module."""
    rows: list[list[bool]] = []  # True: dark
    for line in text.splitlines():
        if not line:
            continue
        top, bottom = zip(*(_HALVES[c] for c in line), strict=True)
        rows += [list(top), list(bottom)]
    width = len(rows[0]) * scale
    raw = b"".join(
        b"\x00" + bytes(0 if dark else 255 for dark in row for _ in range(scale))
        for row in rows
        for _ in range(scale)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, len(rows) * scale, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
