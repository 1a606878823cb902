"""The paper's Simple CNN (Table 2: 15 epochs, batch 32, Adam, sigmoid, lr 0.1).

  python -m nucjax.main --config=configs/simple_cnn.py --workdir=runs/simple_cnn
  python -m nucjax.main --config=configs/simple_cnn.py:quick --workdir=runs/simple_cnn_quick
Variants: paper (default), tuned (lr 1e-3 and ReLU hidden layers: with the paper's sigmoid
hidden layers the network stays at "all background" even at lr 1e-3, see experiments/README.md;
the output stays sigmoid), quick (paper settings on 128x128 crops, minutes on a CPU), tiny.
"""

from configs import common, tiny


def get_config(arg=None):
    variant = common.variant(arg)
    config = common.get_config()
    m = config.model
    m.name = "simple_cnn"
    m.target = "three_class"
    m.output_activation = "sigmoid"
    m.hidden_activation = "sigmoid"
    m.width = 64
    m.num_dense = 6
    m.border_weight = 0.0

    config.optim.name = "adam"
    config.optim.learning_rate = 0.1
    config.train.batch_size = 32
    config.train.num_epochs = 15

    if variant == "tuned":
        config.optim.learning_rate = 1e-3
        m.hidden_activation = "relu"
    if variant == "quick":
        config.data.crop_size = 128
        config.train.eval_every_steps = 100
    if variant == "tiny":
        m.width = 8
        tiny.apply_tiny(config)
    return config
