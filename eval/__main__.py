"""``python -m eval ...`` is ``sharpen eval ...``."""

from pipeline.cli import stage_main

stage_main("eval")
