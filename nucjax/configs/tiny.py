"""Shared overrides that make any model's `:tiny` variant: seconds on a CPU, offline data."""


def apply_tiny(config):
    """Synthetic 64x64 data, batch 4 (one image per fake test device), 2 steps."""
    d = config.data
    d.source = "synthetic"
    d.synthetic_num_images = 8
    d.synthetic_size = 64
    d.crop_size = 64
    d.max_instances = 32
    t = config.train
    t.batch_size = 4
    t.num_steps = 2
    t.log_every_steps = 1
    t.eval_every_steps = 2
    t.checkpoint_every_steps = 1000
    config.eval.train_images = 4
    config.eval.tile_size = 64
    config.eval.tile_overlap = 16
    return config
