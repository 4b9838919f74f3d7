"""embed2spec: learn to turn frame-level speech embeddings back into spectrograms and audio."""

__version__ = "0.1.0"
