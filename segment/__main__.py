"""``python -m segment ...`` is ``sharpen segment ...``."""

from pipeline.cli import stage_main

stage_main("segment")
