"""Shared pieces under the stages: configuration, device and processes, checkpoints, run-folder
layout and records, output locks, drawing. Imports only from ``eval`` and ``data`` below it."""
