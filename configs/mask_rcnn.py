"""The paper's Mask R-CNN (Table 2: 30 epochs, batch 16, SGD, ReLU, lr 0.01).

  python -m nucjax.main --config=configs/mask_rcnn.py --workdir=runs/mask_rcnn
Variants: paper (default), quick (CPU minutes), tiny (tests). The model itself lands with its
own issue (nucjax/models/mask_rcnn.py); the Table 2 settings are fixed here already.
"""

from configs import common, tiny


def get_config(arg=None):
    variant = common.variant(arg)
    config = common.get_config()
    m = config.model
    m.name = "mask_rcnn"
    m.backbone = "resnet"  # "resnet" (ResNet-FPN) or "light" (the paper's six conv+BN+ReLU)
    m.depth = 50
    m.hidden_activation = "relu"

    config.optim.name = "sgd"
    config.optim.learning_rate = 0.01
    config.optim.momentum = 0.9
    config.optim.warmup_steps = 100
    config.train.batch_size = 16
    config.train.num_epochs = 30

    if variant == "quick":
        config.data.crop_size = 128
        m.backbone = "light"
    if variant == "tiny":
        m.backbone = "light"
        tiny.apply_tiny(config)
    return config
