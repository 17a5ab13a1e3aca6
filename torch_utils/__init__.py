"""PyTorch helpers used by the networks and the trainer (knows no model)."""
