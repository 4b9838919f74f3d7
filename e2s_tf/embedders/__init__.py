"""Embedders: waveform -> frame-level embeddings `[frames, dim]` on a grid.

    embedder = get_embedder("logmel", stft_config)  # mfcc, energy, npy,
                                                    # onnx:PATH, savedmodel:PATH
    features = embedder.embed(audio, item)          # [frames, embedder.dim]

Importing this package registers every embedder module below.
"""

from e2s_tf.embedders import energy
from e2s_tf.embedders import logmel
from e2s_tf.embedders import mfcc
from e2s_tf.embedders import npy
from e2s_tf.embedders import onnx
from e2s_tf.embedders import savedmodel
from e2s_tf.embedders.base import Embedder
from e2s_tf.embedders.base import EmbedderError
from e2s_tf.embedders.base import Grid
from e2s_tf.embedders.registry import available
from e2s_tf.embedders.registry import embedder_class
from e2s_tf.embedders.registry import from_description
from e2s_tf.embedders.registry import get_embedder
from e2s_tf.embedders.registry import register
from e2s_tf.embedders.savedmodel import write_embedder_json

__all__ = [
    "Embedder", "EmbedderError", "Grid", "available", "embedder_class",
    "from_description",
    "get_embedder", "register", "write_embedder_json", "logmel", "mfcc", "npy",
    "onnx", "savedmodel", "energy",
]
