"""Training: the training loop of any registered architecture, metrics (AUC, log loss), baselines, checkpoints."""

from toolkit.metrics import auc, evaluate, log_loss
from toolkit.train.baselines import BaselineResult, item_popularity, logistic_regression
from toolkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from toolkit.train.loop import (
    EpochStats,
    TrainConfig,
    TrainResult,
    dlrm_config_for,
    feature_sizes,
    fit_model,
    model_config_for,
    predict,
    train_dlrm,
    train_model,
)
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
    "feature_sizes",
    "fit_model",
    "item_popularity",
    "load_checkpoint",
    "log_loss",
    "logistic_regression",
    "model_config_for",
    "predict",
    "save_checkpoint",
    "train_checkpoint",
    "train_dlrm",
    "train_model",
]
