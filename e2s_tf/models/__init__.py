"""Decoders from frame embeddings to log-STFT, and their training wrappers.

    from e2s_tf import models
    model = models.build(config.model.name, config, log_stft_mean, log_stft_std)
    model.compile(optimizer, **config.loss)  # GAN: (g_optimizer, d_optimizer)
    metrics = model.train_step(batch)              # inside a tf.function
    log_stft = model(embedding, mask, speaker)  # [batch, frames, bins] f32

Registered names: 'cnn', 'multiscale', 'gan' (`available()`); each has a
documented `default_model_config(name)` for `config.model`.
"""

from e2s_tf.models import cnn  # noqa: F401  (registers 'cnn')
from e2s_tf.models import gan  # noqa: F401  (registers 'gan')
from e2s_tf.models import multiscale  # noqa: F401  (registers 'multiscale')
from e2s_tf.models.registry import available
from e2s_tf.models.registry import build
from e2s_tf.models.registry import default_model_config
from e2s_tf.models.registry import register

__all__ = ["available", "build", "default_model_config", "register"]
