"""Network extension modules of the built-in plugins.

Each file here is stored whole inside snapshots (torch_utils.persistence), so it imports only torch,
numpy, dnnlib and torch_utils: snapshots trained with a plugin run without the plugin installed.
"""
