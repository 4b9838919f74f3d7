"""The parts every trainer of the project is built from.

    errors.py        TrainingError: a run that cannot go on, in one line
    configio.py      a run's config.json: write whole, read back (old names)
    schedule.py      the learning-rate schedule and the Adam optimiser
    distribution.py  tf.distribute strategies, the chief, replica steps
    checkpoints.py   what a checkpoint holds, its save, restore and repair
    monitor.py       the NaN / divergence stop
    progress.py      log lines: values, durations, first lines of errors

The decoder trainer (e2s_tf.train_lib) and the speaker-encoder trainer
(e2s_tf.speaker) both use them; what is specific to one stays with it.
"""
