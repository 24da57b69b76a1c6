"""The one training loop of every generative method and what it owns: seeded batch order,
augmentation (flips, DiffAugment), EMA, checkpoints, history, sample grids; plus the stages
that run it (``pretrain_vae``, ``train``) and the ``generate`` stage."""
