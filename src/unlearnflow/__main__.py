"""``python -m unlearnflow``: see :mod:`unlearnflow.cli`."""

import sys

from unlearnflow.cli import main

sys.exit(main())
