"""Training: ArcFace on the model zoo, one process or many (torchrun + DDP).

``train(TrainConfig(model=..., data=..., out=...))`` is what ``mfn-deploy train``
runs; the checkpoints it writes are ordinary mfn-deploy checkpoints that
``mfn-deploy export --checkpoint`` reads directly.
"""

from mfn_deploy.train.trainer import TrainConfig, TrainResult, load_history, lr_at, train

__all__ = ["TrainConfig", "TrainResult", "load_history", "lr_at", "train"]
