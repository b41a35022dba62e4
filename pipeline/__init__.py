"""The driver: configuration, the `sharpen` command line, and the end-to-end run."""
