"""Network ops with NVIDIA-compatible names: pure-PyTorch by default, optional CUDA kernels (GAN_CUDA_KERNELS=1)."""
