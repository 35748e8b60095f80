"""Learning on TFF: the Keras model, the federated processes, the TFF runtime and workers, the engine."""
