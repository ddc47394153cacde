"""SSE-PT and SASRec for sequential recommendation, in PyTorch.

The package holds every piece the notebooks use: datasets (`data`), the
training batch sampler (`sampler`), the model (`model`), checkpoints
(`checkpoint`), ranking metrics and evaluation (`metrics`, `evaluate`),
trivial baselines (`baselines`) and the training loop (`train`).
"""

from helpers.errors import CheckpointError, ConfigError, DataError, SSEPTError

__all__ = ["CheckpointError", "ConfigError", "DataError", "SSEPTError"]
