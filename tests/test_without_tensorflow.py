"""Training, resuming and evaluating with TensorFlow unimportable (the borrowed GPU hosts):
config.data.pipeline and config.data.storage `auto` pick the device path and numpy sources."""

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    sys.modules["tensorflow_datasets"] = None
    import nucjax.runtime
    nucjax.runtime.configure()
    import jax
    import numpy as np
    from configs import simple_cnn
    from nucjax import evaluate, train, workdir
    from nucjax.data import pipeline

    def config(steps):
        c = simple_cnn.get_config("tiny")
        c.optim.schedule = "constant"
        c.train.num_steps = steps
        c.train.eval_every_steps = 100
        return c

    out = sys.argv[1]
    straight = train.train_and_evaluate(config(4), out + "/straight")
    train.train_and_evaluate(config(2), out + "/resumed")
    resumed = train.train_and_evaluate(config(4), out + "/resumed")
    report = evaluate.evaluate(None, out + "/resumed")
    params = [workdir.load(out + d).variables["params"] for d in ("/straight", "/resumed")]
    diff = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), *params)
    print(json.dumps({
        "pipeline": pipeline.resolve(config(4).data),
        "tensorflow": sys.modules["tensorflow"] is None,
        "resumed_from": resumed["resumed_from"],
        "straight": straight["final_eval"],
        "resumed": resumed["final_eval"],
        "evaluate_dsb": report["metrics"]["dsb_score"],
        "max_param_diff": max(jax.tree.leaves(diff)),
    }))
    """
)


def test_train_resume_and_evaluate_without_tensorflow(tmp_path):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["pipeline"] == "device" and result["tensorflow"]
    assert result["resumed_from"] == 2
    assert result["max_param_diff"] < 1e-6
    for name in ("train", "validation"):
        straight, resumed = result["straight"][name], result["resumed"][name]
        assert straight.keys() == resumed.keys() and straight
        for key, value in straight.items():
            assert abs(resumed[key] - value) < 1e-6, (name, key)
    assert result["evaluate_dsb"] == result["resumed"]["validation"]["dsb_score"]
