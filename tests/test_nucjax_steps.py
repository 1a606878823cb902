"""experiments/nucjax_steps.py: what the benchmarks build and how --jax_options is read."""

import pytest

from experiments import nucjax_steps


def test_parse_options_types_values_as_xla_wants_them():
    options = nucjax_steps.parse_options(
        "--xla_cpu_enable_fast_math=true xla_cpu_prefer_vector_width=512 "
        "xla_cpu_experimental_ynn_fusion_type= b=False"
    )
    assert options == {
        "xla_cpu_enable_fast_math": True,
        "xla_cpu_prefer_vector_width": 512,
        "xla_cpu_experimental_ynn_fusion_type": "",
        "b": False,
    }
    assert nucjax_steps.parse_options("x=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE") == {
        "x": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"
    }


@pytest.mark.parametrize("text", ["", "xla_cpu_enable_fast_math", "=1"])
def test_parse_options_refuses_what_is_not_name_value_pairs(text):
    with pytest.raises(ValueError, match="name=value pairs"):
        nucjax_steps.parse_options(text)


def test_net_config_is_the_paper_config_with_overrides():
    config = nucjax_steps.net_config("resnet50", 128, 4)
    assert (config.model.name, config.model.depth, config.optim.name) == ("resnet", 50, "adadelta")
    assert (config.data.crop_size, config.train.batch_size) == (128, 4)
    unet = nucjax_steps.net_config("unet", 0, 0)
    assert (unet.data.crop_size, unet.train.batch_size, unet.optim.learning_rate) == (256, 16, 0.01)
    with pytest.raises(ValueError, match="unknown net 'vgg'"):
        nucjax_steps.net_config("vgg", 0, 0)


def test_matmul_sides_agree_and_interleave_counts_rounds():
    import numpy as np

    runs = nucjax_steps.matmul_sides(64, ("numpy", "tensorflow", "jax"))
    products = {k: np.asarray(run()) for k, run in runs.items()}
    assert {k: p.shape for k, p in products.items()} == dict.fromkeys(runs, (64, 64))
    np.testing.assert_allclose(products["tensorflow"], products["numpy"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(products["jax"], products["numpy"], rtol=1e-4, atol=1e-3)
    assert np.abs(products["numpy"]).max() > 1  # a real product of normal draws, not zeros
    times = nucjax_steps.interleave(runs, 3)
    assert {k: len(v) for k, v in times.items()} == dict.fromkeys(runs, 3)
    assert all(t > 0 for v in times.values() for t in v)
    assert isinstance(nucjax_steps.openblas_core(), str)
