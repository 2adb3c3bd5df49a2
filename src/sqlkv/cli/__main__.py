"""``python -m sqlkv.cli``: the ``sqlkv`` command without its console script."""

import sys

from .main import main

sys.exit(main())
