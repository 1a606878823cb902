"""ResNet segmentation network (nucjax.models.resnet): ResNet-152 backbone + U-Net-like decoder.

  python -m nucjax.main --config=configs/resnet.py:quick --workdir=runs/resnet_quick
  python -m nucjax.main --config=configs/resnet.py --workdir=runs/resnet_paper

Variants (after the colon):
  paper  the paper's Table 2: ResNet-152, Adadelta lr 0.1, batch 10, 40 epochs (default)
  quick  ResNet-18 at width 32 on 128x128 crops, batch 8, 800 steps: about 15 minutes on a
         2-core CPU (measured through nucjax.main on real data, machine shared: 1.1 s a step
         with the input pipeline, 0.43 s for the step alone)
  best   quick, plus what generalises to unseen images (experiments/README.md, "Accuracy"):
         grey-inverted input, Adam 2e-3 with cosine decay instead of Adadelta, intensity and
         scale jitter
  tiny   ResNet-18 at width 8 on 64x64 synthetic crops, 2 steps: for tests

Transfer learning: make an ImageNet backbone once (needs internet for Keras's download)
  python -m nucjax.models.keras_import --depth=152 --out=pretrained/resnet152
then add --config.model.pretrained=pretrained/resnet152 --config.model.input_adapter=caffe
(and optionally --config.model.freeze_backbone_steps=500).
"""

from nucjax.configs import common, tiny

VARIANTS = ("paper", "quick", "best", "tiny")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS)
    config = common.get_config()

    m = config.model
    m.name = "resnet"
    m.depth = 152  # 18, 34 (basic blocks), 50, 101, 152 (bottlenecks, Keras weights exist)
    m.width = 64  # stage widths width * [1, 2, 4, 8]; 64 is the standard network
    m.decoder_width = 256  # decoder channels at stride 16, halved at each finer stride
    m.target = "three_class"
    m.output_activation = "sigmoid"
    m.border_weight = 0.0  # binary target only: extra weight of nucleus borders
    m.dice_weight = 0.0  # > 0: add this times the per-image soft Dice loss (BCE + Dice)
    # "none": the backbone sees per-image normalised input; "caffe": mapped to what Keras
    # ImageNet weights expect (BGR 0..255 minus the ImageNet mean), use with `pretrained`.
    m.input_adapter = "none"
    # A fusion_wall after every residual block (nucjax/models/layers.py): "auto" = on the CPU
    # backend (the ResNet-152 train step 1.6-3x faster there), off elsewhere; "on" / "off".
    m.fusion_walls = "auto"
    m.pretrained = ""  # orbax backbone checkpoint from nucjax.models.keras_import; "" = none
    m.freeze_backbone_steps = 0  # keep a pretrained backbone fixed for this many steps

    # Table 2 of the paper.
    config.optim.name = "adadelta"
    config.optim.learning_rate = 0.1
    config.train.batch_size = 10
    config.train.num_epochs = 40

    if variant in ("quick", "best"):
        m.depth = 18
        m.width = 32
        m.decoder_width = 128
        config.data.crop_size = 128
        config.train.batch_size = 8
        config.train.num_steps = 800
        config.train.log_every_steps = 50
        config.train.eval_every_steps = 400
        config.train.checkpoint_every_steps = 400
        config.eval.max_images = 24
    if variant == "best":
        config.data.input_view = "grey_inverted"
        config.optim.name = "adam"
        config.optim.learning_rate = 2e-3
        config.optim.schedule = "cosine"
        config.data.intensity_jitter = 0.2
        config.data.scale_jitter = 0.25
    elif variant == "tiny":
        m.depth = 18
        m.width = 8
        m.decoder_width = 16
        tiny.apply_tiny(config)
    return config
