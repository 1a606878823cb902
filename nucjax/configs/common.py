"""Fields every nucjax experiment has. Model config files start from `get_config()` here.

Every field can be overridden on the command line, for example
  python -m nucjax.main --config=configs/unet.py --config.optim.learning_rate=3e-4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # The network; each model config fills in its own fields (nucjax.models.<name>).
    config.model = ml_collections.ConfigDict()
    config.model.name = ""
    # float32 | bfloat16: what the training step computes in; parameters, optimizer state
    # and the loss stay float32 (nucjax.models.spec.ModelSpec.compute_dtype).
    config.model.compute_dtype = "float32"

    config.data = data = ml_collections.ConfigDict()
    data.source = "dsb2018"  # "dsb2018" (the real set) or "synthetic" (offline, tests)
    data.data_dir = ""  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    # Where the BBBC038 files come from: an http(s) or file:// URL prefix, or a local folder.
    # "" = $NUCJAX_DSB2018_SOURCE, else the Broad Bioimage Benchmark Collection's addresses.
    data.download_source = ""
    data.validation_fraction = 0.1
    data.split_seed = 0
    # Where DSB images are read from: tfds (TensorFlow), compact (one .npz per split, numpy
    # only; nucjax.data.dsb2018_compact) or auto (tfds when TensorFlow imports, else compact).
    data.storage = "auto"
    # How training batches are made: tfdata (host CPU), device (jitted JAX on the
    # accelerator, no TensorFlow) or auto (tfdata when TensorFlow imports, else device).
    data.pipeline = "auto"
    data.crop_size = 256  # training crops (square); small images are padded, label -1
    # Draw training images with weight n_modality ** -modality_balance (0 = the data set's own
    # mix; 1 = every modality equally often): nucjax.data.pipeline.sampling_weights.
    data.modality_balance = 0.0
    data.input_view = "rgb"  # rgb | grey_inverted | inverted (nucjax.data.images.INPUT_VIEWS)
    data.flips = True
    data.rot90 = True
    data.scale_jitter = 0.0  # random zoom in [1 - s, 1 + s]; 0 disables
    data.intensity_jitter = 0.0  # random contrast/brightness of +- this fraction; 0 disables
    # On the device, in the train step (nucjax.augment), for any input pipeline:
    data.blur = 0.0  # Gaussian blur of sigma ~ U(0, blur) pixels; 0 disables
    data.noise = 0.0  # Gaussian noise of std ~ U(0, noise), normalised-image units; 0 disables
    data.max_instances = 512  # padded instances per crop (Mask R-CNN); DSB has up to 375
    data.prefetch = 2
    data.synthetic_num_images = 64  # data.source="synthetic": images per split
    data.synthetic_size = 256
    data.synthetic_brightfield_fraction = 0.25

    config.optim = optim = ml_collections.ConfigDict()
    optim.name = "adam"  # adam | adamw | adadelta | sgd
    optim.learning_rate = 1e-3
    optim.schedule = "constant"  # constant | cosine | warmup_cosine
    optim.warmup_steps = 0
    optim.weight_decay = 0.0
    optim.momentum = 0.9  # sgd
    optim.nesterov = False  # sgd
    optim.rho = 0.95  # adadelta
    optim.eps = 1e-7  # adam / adadelta epsilon (Keras default 1e-7)
    optim.grad_clip_norm = 0.0  # 0 disables

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 16  # global batch, split across all devices of all hosts
    train.num_epochs = 20
    train.num_steps = 0  # > 0 overrides num_epochs
    train.log_every_steps = 10
    train.eval_every_steps = 0  # 0 = once per epoch
    # 250, not the paper's 1000: its U-Net (760 steps) and Simple CNN (285) runs would never
    # checkpoint before the end, so a preemption lost all of it. 1000 stays one override away:
    # --config.train.checkpoint_every_steps=1000. 0 = only at the end (and when preempted).
    train.checkpoint_every_steps = 250
    train.keep_checkpoints = 3  # >= 1 (nucjax.config_checks)
    # > 0: stop (checkpoint, evaluate, summary) once this many minutes of training are spent,
    # counted over resumed runs too (nucjax.budget); evaluation time is not counted. 0 = none.
    train.max_minutes = 0.0
    # A trained model (workdir or model bundle) whose parameters and batch statistics replace
    # the initial ones: fine-tuning, e.g. in another data.input_view or on another data mix.
    # The optimizer and the step count start afresh; "" = train from scratch.
    train.init_from = ""

    # Evaluation (nucjax.evaluators), the same in the trainer and in --mode=evaluate: whole
    # images through the tiling and post-processing below. The trainer scores
    # `eval.train_images` training images by pixel metrics and `eval.max_images` images of
    # `eval.split` by every instance metric (0 = all); --mode=evaluate scores all of the split.
    config.eval = ev = ml_collections.ConfigDict()
    ev.split = "validation"
    ev.max_images = 0
    ev.train_images = 16
    # At each evaluation in training, the first few images of eval.split go to TensorBoard
    # (image summaries), the true nuclei outlined beside the predicted ones; 0 = none.
    ev.summary_images = 3
    # Whole-image prediction and instance post-processing (nucjax.whole_image,
    # nucjax.postprocess), shared by evaluation and predict.
    # Whole images are predicted in overlapping tiles of at most this size (tiling.tile_side
    # picks the length): a 1024 x 1024 image is one tile, and a call holds at most
    # whole_image.BATCH_PIXELS pixels, so memory stays that of four 512 x 512 tiles.
    ev.tile_size = 1024
    ev.tile_overlap = 64
    ev.flip_tta = False  # average each tile's logits over its 4 flips (per-pixel models only)
    ev.transpose_tta = False  # with flip_tta: and over the transposed tile's 4 flips (8 in all)
    ev.nucleus_area = 0.0  # px; > 0: rescale images so the median nucleus has this area; 0 = off
    ev.min_scale = 0.5  # lower bound of the nucleus_area rescale factor
    ev.max_scale = 2.0  # upper bound of the nucleus_area rescale factor
    ev.foreground_threshold = 0.5
    ev.seed_threshold = 0.5  # three-class: interior probability that makes a seed
    # three-class: a trained instance model (workdir or bundle, e.g. a Mask R-CNN) whose
    # nuclei, each shrunk by seed_erosion px, seed the watershed instead of the interior
    # probability; foreground no such seed reaches is dropped. "" = off.
    ev.seeds_from = ""
    ev.seed_erosion = 2
    # Seed nuclei scored below this (the seed model's confidence) seed nothing.
    ev.seed_min_score = 0.0
    # Within the seed nuclei, foreground above this (when below foreground_threshold) is
    # foreground too: a nucleus this model sees faintly keeps the seed model's outline.
    ev.seed_foreground_threshold = 0.5
    # binary: a distance-transform maximum seeds a nucleus when it stands this many pixels
    # above the saddle to any higher neighbour (h-maxima); lower splits more
    ev.seed_depth = 2.0
    ev.min_size = 10  # remove predicted nuclei smaller than this, pixels
    ev.fill_holes = True
    ev.max_hole_size = 100  # only holes up to this area (px) are filled: larger ones are gaps
    return config


def variant(arg: str | None, variants: tuple[str, ...]) -> str:
    """The variant after the colon in `--config=configs/x.py:quick`; '' means "paper".

    variants: the names the config file declares (its VARIANTS). Anything else is an error
    naming them, so a typo never silently runs the paper settings.
    """
    name = (arg or "").strip() or "paper"
    if name not in variants:
        raise ValueError(f"unknown config variant {name!r}; this config has {', '.join(variants)}")
    return name
