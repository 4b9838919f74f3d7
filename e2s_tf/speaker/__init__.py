"""The learned frame-level speaker encoder, one module per concern:

    network.py         the network: log-mel front end, TDNN, pooling,
                       additive-margin head and loss (`build_encoder`)
    sampling.py        a manifest's utterances, the per-speaker train /
                       held-out split, the random crops (`CropSampler`)
    identification.py  cosine, enrolment, closed-set identification,
                       embedding whole utterances
    workdir.py         the workdir's files and checkpoints, the resume
                       check, the trained encoder read back
    training.py        `train` (built on e2s_tf/training) and `evaluate`
    export.py          the SavedModel export (at the encoder's hop or a
                       multiple of it) and `load_encoder`

e2s_tf.train_embedder is its program.
"""
