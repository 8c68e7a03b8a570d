"""``python -m streamproxy``: the same as the ``streamproxy`` command."""

import sys

from .cli import main

sys.exit(main())
