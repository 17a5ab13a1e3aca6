"""Evaluation metrics: NVIDIA's (FID, KID, precision/recall, IS, PPL), class-conditional additions and
metrics computed with the project's own offline classifier. See metric_main.py for the registry."""
