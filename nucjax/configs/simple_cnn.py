"""The paper's Simple CNN (Table 2: 15 epochs, batch 32, Adam, sigmoid, lr 0.1).

  python -m nucjax.main --config=configs/simple_cnn.py --workdir=runs/simple_cnn
  python -m nucjax.main --config=configs/simple_cnn.py:quick --workdir=runs/simple_cnn_quick
Variants (after the colon):
  paper  Table 2 exactly (default). On DSB 2018 it stays at "all background": six stacked
         sigmoid hidden layers never leave the class prior, at lr 0.1 or 1e-3
         (experiments/README.md).
  tuned  the settings that learn: ReLU hidden layers and Adam lr 1e-3 (the output stays sigmoid)
  quick  tuned on 128x128 crops, evaluated every 100 steps: minutes on a CPU
  best   quick, plus grey-inverted input and intensity jitter (experiments/README.md,
         "Accuracy"); its 3x3 view still cannot split touching nuclei
  tiny   a width-8 network on 64x64 synthetic crops, 2 steps: for tests
"""

from nucjax.configs import common, tiny

VARIANTS = ("paper", "tuned", "quick", "best", "tiny")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS)
    config = common.get_config()
    m = config.model
    m.name = "simple_cnn"
    m.target = "three_class"
    m.output_activation = "sigmoid"
    m.hidden_activation = "sigmoid"
    m.width = 64
    m.num_dense = 6
    m.border_weight = 0.0
    m.dice_weight = 0.0  # > 0: add this times the per-image soft Dice loss (BCE + Dice)

    config.optim.name = "adam"
    config.optim.learning_rate = 0.1
    config.train.batch_size = 32
    config.train.num_epochs = 15

    if variant in ("tuned", "quick", "best"):
        config.optim.learning_rate = 1e-3
        m.hidden_activation = "relu"
    if variant in ("quick", "best"):
        config.data.crop_size = 128
        config.train.eval_every_steps = 100
        config.eval.max_images = 24
    if variant == "best":
        config.data.input_view = "grey_inverted"
        config.data.intensity_jitter = 0.2
        config.train.num_epochs = 10
        config.train.eval_every_steps = 100
    if variant == "tiny":
        m.width = 8
        tiny.apply_tiny(config)
    return config
