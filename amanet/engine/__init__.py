"""Training (:mod:`.train`, DDP via :mod:`.launch`), the training data stream (:mod:`.loader`),
inference over test sets (:mod:`.inference`) and evaluation (:mod:`.evaluate`)."""
