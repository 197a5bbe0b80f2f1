"""What the config checks read of the metrics, without scipy (the workflow reads it when it is parsed)."""

#: Fewest models per side KLOM accepts; the noise floor splits the oracles in halves of this.
MIN_MODELS = 2
