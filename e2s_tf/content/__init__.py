"""The content judge: a CTC phone recogniser trained on a corpus' original
audio, scoring *what was said* in reconstructed audio by its phone error rate
(PER) against espeak-ng's phones of the text. One module per concern:

    g2p.py       espeak-ng's G2P: `phonemes(text, language)`, the targets
    network.py   the network: log-mel front end, SpecAugment-lite, separable
                 convolution blocks, CTC loss, greedy decoding
    data.py      a manifest's items with text, audio and phones, the
                 train / held-out split, length buckets (`BucketSampler`)
    decoding.py  batched transcription of waveforms, the corpus PER
    workdir.py   the workdir's files and checkpoints, the resume check, the
                 trained network read back (best or last weights)
    training.py  `train` (built on e2s_tf/training) and `evaluate`
    export.py    the SavedModel export and `load_judge`

e2s_tf.train_content_judge is its program; e2s_tf.aspects.content has the
error rates.
"""
