"""``python -m wg_netmanager``: the same as the ``wg_netmanager`` console script."""

import sys

from wg_netmanager.cli import main

if __name__ == "__main__":
    sys.exit(main())
