"""Training: ArcFace on the model zoo, one process or many (torchrun + DDP).

``trainer.train(TrainConfig(model=..., data=..., out=...))`` is what ``mfn-deploy
train`` runs; the checkpoints it writes are ordinary mfn-deploy checkpoints that
``mfn-deploy export --checkpoint`` reads directly. ``config`` holds every setting and
its default, without torch, so the CLI can show them at once.

Nothing heavy is imported here: ``import mfn_deploy.train.config`` stays cheap.
"""
