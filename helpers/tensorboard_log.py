"""Training curves in TensorBoard: `fit`'s per-epoch rows written through `torch.utils.tensorboard`.

`TensorBoardLog(DIR, config)` is an `on_epoch` hook for `helpers.train.fit`: each epoch it writes the training loss,
the seconds the epoch took and the learning rate, and at each evaluation every validation (and test) metric, one
scalar per tag (`train/loss`, `train/seconds_per_epoch`, `train/lr`, `valid/ndcg@10`, ...), with the epoch as step.
`tensorboard` is an optional extra (`pip install 'ssept-pytorch[tune]'`); without it, `require_tensorboard` fails in
one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.errors import ConfigError
from helpers.settings import TrainConfig

#: What to install for `--tensorboard`, in the one-line error given without it.
INSTALL_HINT = "pip install 'ssept-pytorch[tune]' (the tune extra), or pip install tensorboard"


def require_tensorboard() -> type:
    """`torch.utils.tensorboard.SummaryWriter`, or a one-line `ConfigError` naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}"
                          ) from None
    return SummaryWriter


class TensorBoardLog:
    """An `on_epoch(epoch, row)` hook of `fit` that writes the row's numbers to a TensorBoard folder."""

    def __init__(self, log_dir: str | Path, config: TrainConfig) -> None:
        self.writer = require_tensorboard()(log_dir=str(log_dir))
        self.lr = config.lr  # Adam without a schedule: the rate is the same every epoch

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        """Write one epoch: loss, seconds and learning rate; the metrics when the epoch was evaluated."""
        scalars = {"train/loss": row["loss"], "train/seconds_per_epoch": row["seconds"], "train/lr": self.lr}
        if "eval_seconds" in row:
            scalars["eval/seconds"] = row["eval_seconds"]
        for key, value in row.items():
            which, _, metric = key.partition("_")
            if which in ("valid", "test") and metric and isinstance(value, (int, float)):
                scalars[f"{which}/{metric}"] = value
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()  # a killed run keeps its curves up to its last epoch

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
