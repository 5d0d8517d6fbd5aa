"""Flow-map models, objectives, training, metrics and the oracle's check logic."""
