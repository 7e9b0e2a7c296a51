"""``python -m wg_netmanager`` and the ``wg_netmanager`` console script.

The garbage collector is off while the command line and the daemon import:
what they make lives as long as the process, so collecting it meanwhile
finds nothing, and it cost 7 % of the imports' CPU (67 collections, 15 of
215 ms). ``cli.imports_done`` freezes what the imports made out of every
later collection (``gc.freeze``) and turns the collector on again; the
cycles the imports left (about 2,300 objects) are collected once start-up
has settled (``daemon.import_in_thread``).
"""

import gc
import sys

gc.disable()

from wg_netmanager.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
