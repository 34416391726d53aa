"""fastText classifiers: one text preparation (:mod:`.text_prep`) shared by training (:mod:`.train`,
run by ``kind: classifier`` specs) and the ops that apply them (:mod:`.apply`: ``quality_classifier``,
``toxicity``); :mod:`.default_toxicity` builds the project's default toxicity model."""
