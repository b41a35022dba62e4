"""Stage 1: classifiers, plain or ICASC."""
