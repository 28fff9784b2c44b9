"""``python -m whaleaudit``: see :mod:`whaleaudit.cli`."""

import sys

from .cli import main

sys.exit(main())
