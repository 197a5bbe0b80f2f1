"""What the config checks read of the metrics, without scipy (the workflow reads it when it is parsed)."""

#: Fewest models per side KLOM accepts; the noise floor splits the oracles in halves of this.
MIN_MODELS = 2
#: An unlearned model's largest |logit| beyond which its outputs count as exploded, so that its
#: configuration diverged (``evaluation.max_abs_logit``): trained classifiers' logits are tens at most.
MAX_ABS_LOGIT = 1.0e4
