"""Training: the DLRM training loop, metrics (AUC, log loss), baselines, checkpoints."""

from toolkit.metrics import auc, evaluate, log_loss
from toolkit.train.baselines import BaselineResult, item_popularity, logistic_regression
from toolkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from toolkit.train.loop import EpochStats, TrainConfig, TrainResult, dlrm_config_for, fit_model, predict, train_dlrm
from toolkit.train.run import TrainReport, train_checkpoint

__all__ = [
    "BaselineResult",
    "Checkpoint",
    "EpochStats",
    "TrainConfig",
    "TrainReport",
    "TrainResult",
    "auc",
    "dlrm_config_for",
    "evaluate",
    "fit_model",
    "item_popularity",
    "load_checkpoint",
    "log_loss",
    "logistic_regression",
    "predict",
    "save_checkpoint",
    "train_checkpoint",
    "train_dlrm",
]
