"""Training: Lightning modules and data, per-locale validation, adapter-only checkpoints,
pseudo-labelling and checkpoint-wise merging."""
