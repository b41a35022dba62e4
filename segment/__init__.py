"""Stage 3: SEC segmenter, dense CRF, predictions and submissions."""
