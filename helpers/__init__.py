"""SSE-PT and SASRec for sequential recommendation, in PyTorch.

Three layers, one per folder; a layer imports only from the layers above it in this list:

- `helpers/` (the core a user imports): settings (`settings`: model and training configs,
  presets), data (`data`, `fetch`, `convert`, `history`, `sampler`), the model (`layers`, `model`),
  training (`losses`, `train`, `resume`, `runs`, `checkpoint`, `distributed`), evaluation (`metrics`,
  `evaluate`, `baselines`), recommendations and serving (`recommend`, `batch`, `export`) and the search
  (`tune`, `search_space`, `tune_storage`, `tensorboard_log`), with `utils`, `errors` and `machine` (the
  machine a record was made on).
- `helpers/notebook/`: what the notebooks share: setup and run records (`session`), the
  committed-notebook checks (`outputs`), figures (`plots`) and results tables (`results`).
- `helpers/studies/`: studies that drive the core (listed in `helpers/studies/__init__.py`), with what
  their records share (`records`) and their synthetic data (`synthetic`).

`tests/test_layers.py` reads every module's imports and holds this order, with no circles.
"""

from helpers.errors import CheckpointError, ConfigError, DataError, SSEPTError

__all__ = ["CheckpointError", "ConfigError", "DataError", "SSEPTError"]
