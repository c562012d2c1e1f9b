"""``python -m sandbox.cli``: the ``sandbox`` command without its console script."""

import sys

from sandbox.cli.main import main

sys.exit(main())
