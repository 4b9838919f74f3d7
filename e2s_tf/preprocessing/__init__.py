"""The parts of the preprocessing stage (manifest -> TFRecord shards +
dataset_info.json), one step a module:

    run.py       the four steps of a run, in order (start reading here)
    errors.py    PreprocessError: a run that cannot make a dataset, in one line
    plan.py      Settings and their checks; the Plan: manifest, embedder,
                 split, tasks and shards, all fixed before any item is read
    splits.py    the train/valid/test split (by speaker or utterance)
    pieces.py    long items cut into pieces at pauses
    items.py     one item -> an example or a rejection with its Reason
                 (ItemProcessor: what one worker holds)
    stats.py     Summary: mergeable counts, lengths and mean/std sums
                 (MIN_STD, the one floor of the statistics)
    output.py    the output folder: own files, lock, shard writer, commit
    reports.py   the end of a run: checks, rejected.jsonl, pieces.jsonl,
                 dataset_info.json

Two runners are built from them, with the same results: the local process
pool (e2s_tf.preprocess_lib) and the Apache Beam pipeline
(e2s_tf.beam_preprocess); each supplies step 3's processing of the items.
e2s_tf.preprocess is the program.
"""
