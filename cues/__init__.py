"""Stage 2: attention maps and SEC localization cues."""
