"""The ``wg_netmanager`` command: start-up without the cyclic garbage collector.

Start-up imports a few hundred modules (trio, msgspec, yaml, ...). Their
objects live as long as the process, yet the collector would walk them again
and again while they are being made. It is off until the daemon's modules
are imported; then those objects go to the permanent generation
(``gc.freeze``), so that later collections skip them too.
"""

from __future__ import annotations

import gc

_paused = False


def main() -> int:
    global _paused
    gc.disable()
    _paused = True
    from wg_netmanager.cli import main as cli_main

    return cli_main()


def imports_done() -> None:
    """The daemon's modules are imported: the collector runs again (if
    ``main`` stopped it; a caller of ``cli.main`` keeps its own setting)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
