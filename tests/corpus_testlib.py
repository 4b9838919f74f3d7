"""What the corpus and manifest tests share: the planned utterances of a
`corpus.make_corpus` call (the tiny corpus itself is conftest's
`tiny_corpus_manifest`)."""

from e2s_tf import corpus


def planned_utterances(speakers=2, utterances=2, seed=0):
  """{id: Utterance} that `make_corpus(speakers, utterances, seed)` writes."""
  voices = corpus.make_speakers(speakers, seed)
  return {u.id: u for i, v in enumerate(voices) for u in
          (corpus.make_utterance(v, i, j, seed) for j in range(utterances))}
