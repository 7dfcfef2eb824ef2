"""``python -m aimq_cli``: the same as the ``aimq`` script."""

import sys

from aimq_cli.main import main

sys.exit(main())
