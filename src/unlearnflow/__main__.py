"""``python -m unlearnflow``: see :mod:`unlearnflow.cli`."""

import sys

from .cli import main

sys.exit(main())
