"""Fine-tuning: the "vanilla" model the paper trains on the fictitious profiles before unlearning."""

from .vanilla import TrainConfig, TrainReport, train_vanilla

__all__ = ["TrainConfig", "TrainReport", "train_vanilla"]
