"""``python -m classify ...`` is ``sharpen classify ...``."""

from pipeline.cli import stage_main

stage_main("classify")
