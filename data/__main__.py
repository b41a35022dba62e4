"""``python -m data ...`` is ``sharpen data ...``."""

from pipeline.cli import stage_main

stage_main("data")
