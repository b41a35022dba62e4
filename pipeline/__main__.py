"""``python -m pipeline`` is the ``sharpen`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
