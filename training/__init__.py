"""Training package: networks, losses, datasets and the training loop (stylegan2-ada-pytorch layout)."""
