"""midtrain: midtraining research on LitGPT — exact, resumable data mixtures, branching from trunk checkpoints."""

from midtrain.errors import ConfigError, DataError, MidtrainError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "MidtrainError", "__version__"]
