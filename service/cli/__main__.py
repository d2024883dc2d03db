"""``python -m service.cli``: the ``steno`` command without its console script."""

import sys

from service.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
