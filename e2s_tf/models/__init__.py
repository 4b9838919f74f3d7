"""Decoders from frame embeddings to log-STFT, and the model that trains them.

    from e2s_tf import models
    model = models.build(config, dataset_info)   # a TrainableDecoder
    model.compile(optimizer, discriminator_optimizer, **config.loss)
    metrics = model.train_step(batch)             # inside a tf.function
    log_stft = model(embedding, mask, speaker)    # [batch, frames, bins] f32

Registered names: 'cnn', 'multiscale', 'conformer', 'gan' (multiscale
generator) and 'conformer_gan' (`available()`); each has a
documented `default_model_config(name)` for `config.model`, the one place
its defaults live.
"""

from e2s_tf.models import cnn  # noqa: F401  (registers 'cnn')
from e2s_tf.models import conformer  # noqa: F401  (registers 'conformer')
from e2s_tf.models import gan  # noqa: F401  (registers 'gan', 'conformer_gan')
from e2s_tf.models import multiscale  # noqa: F401  (registers 'multiscale')
from e2s_tf.models.registry import available
from e2s_tf.models.registry import build
from e2s_tf.models.registry import default_model_config
from e2s_tf.models.registry import model_config_problem
from e2s_tf.models.registry import register
from e2s_tf.models.trainable import TrainableDecoder

__all__ = ["available", "build", "default_model_config",
           "model_config_problem", "register", "TrainableDecoder"]
