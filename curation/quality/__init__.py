"""Document quality heuristics from the published web-data pipelines, row-wise ops that agree with
datatrove 0.10.1's filters:

* :mod:`curation.quality.gopher` — ``gopher_quality``, ``gopher_repetition`` (Rae et al. 2021)
* :mod:`curation.quality.c4` — ``c4_quality``, ``c4_badwords`` (Raffel et al. 2020)
* :mod:`curation.quality.fineweb` — ``fineweb_quality`` (Penedo et al. 2024)

:mod:`curation.quality.words` counts words and sentences as datatrove does for English (spaCy's
rule-based tokenizer and sentencizer, re-implemented without spaCy); :mod:`curation.quality.text_stats`
holds the shared character sets and repetition statistics.
"""
