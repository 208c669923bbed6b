"""`OneCycle` on each Keras backend, one fresh process per backend: the SGD momentum it
schedules changes the updates on TensorFlow and PyTorch; JAX warns that it is off."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_one_cycle import _linear_problem, _numpy_steps

SCRIPT = """
import json, sys, warnings
import keras, numpy as np
from kerasmtl.callbacks import OneCycle
x, y, w0 = (np.array(v, "float32") for v in json.loads(sys.argv[1]))
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
model.layers[0].kernel.assign(w0)
optimizer = keras.optimizers.SGD(0.01, momentum=0.5)
model.compile(optimizer, "mse")
cycle = OneCycle(max_lr=0.05, total_steps=10, pct_start=0.4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(x, y, batch_size=len(x), epochs=5, shuffle=False, verbose=0, callbacks=[cycle]).history
print(json.dumps({"backend": keras.backend.backend(), "kernel": keras.ops.convert_to_numpy(model.weights[0]).tolist(),
                  "values": [cycle.values(s) for s in range(5)], "momentum": optimizer.momentum,
                  "type": type(optimizer.momentum).__name__, "logged": "momentum" in history,
                  "warnings": [str(w.message) for w in caught if "OneCycle" in str(w.message)]}))
"""


def run_on(backend: str) -> dict:
    x, y = _linear_problem()
    w0 = [[0.3], [0.1], [-0.2]]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([x.tolist(), y.tolist(), w0])],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    result["x"], result["y"], result["w0"] = x.astype("float64"), y.astype("float64"), np.array(w0)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_sgd_steps_use_the_scheduled_momentum(backend):
    got = run_on(backend)
    lrs, moms = zip(*got["values"])
    assert len(set(moms)) == 5  # the momentum changes at every step
    expected = _numpy_steps("sgd", got["x"], got["y"], got["w0"], lrs, moms)
    np.testing.assert_allclose(got["kernel"], expected, rtol=1e-5, atol=5e-6)
    for static in (0.5, moms[0]):  # any fixed momentum gives a visibly different kernel
        assert np.abs(_numpy_steps("sgd", got["x"], got["y"], got["w0"], lrs, moms, static=static) - expected).max() > 1e-4
    assert (got["type"], got["momentum"], got["logged"], got["warnings"]) == ("float", pytest.approx(moms[-1]), True, [])


@pytest.mark.slow
def test_jax_says_the_momentum_is_not_cycled():
    got = run_on("jax")
    lrs, moms = zip(*got["values"])
    # The rate follows the cycle; the momentum stays the optimizer's own 0.5.
    expected = _numpy_steps("sgd", got["x"], got["y"], got["w0"], lrs, moms, static=0.5)
    np.testing.assert_allclose(got["kernel"], expected, rtol=1e-5, atol=5e-6)
    assert (got["type"], got["momentum"], got["logged"]) == ("float", 0.5, False)
    assert len(got["warnings"]) == 1 and "does not cycle the momentum on the JAX backend" in got["warnings"][0]
