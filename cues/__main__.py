"""``python -m cues ...`` is ``sharpen cues ...``."""

from pipeline.cli import stage_main

stage_main("cues")
