"""Python twins of the hpcml model zoo: plain PyTorch modules whose state_dict()
keys, shapes and forward match the C++ models in models/zoo/ (see docs/models.md)."""
