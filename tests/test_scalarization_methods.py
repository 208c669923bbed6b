"""The scalarizations as training methods (`kerasmtl.methods.Scalarization`): one step
equals a hand-written step on the scalarized loss, the learned parameters train and are
saved, and the names agree with the command line's."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmtl import choices, methods, scalarization
from tests.test_gradient_training import LR, TASKS, assert_weights, batch, build, labelled


def test_scalarization_names_are_the_command_lines():
    assert choices.SCALARIZATIONS == tuple(methods.SCALARIZATIONS)
    assert all(methods.SCALARIZATIONS[n]().name == n for n in ("geometric_mean", "imtl_l", "uw"))  # no required option
    assert set(choices.SCALARIZATIONS) <= set(scalarization.METHODS)
    assert isinstance(methods.get("stch", "features", {"mu": 0.1}), methods.STCH)  # the level does not apply
    with pytest.raises(ValueError, match=r"stch needs mu\. Received: mu=None"):
        methods.get("stch")
    with pytest.raises(ValueError, match=r"Known: mean, .*uw \(dwa and famo are .*Received: name='famo'"):
        methods.Scalarization("famo")
    with pytest.raises(TypeError, match=r"cosmos's option weights must be a list of numbers.*Received: weights='x'"):
        methods.COSMOS(lambda_=1.0, weights="x")


def hand_step(model, x, y, method, state):
    """The model's weights after one SGD step on the scalarized loss, by hand."""
    names = [t.name for t in TASKS]
    losses_of = {t.name: t.make_loss() for t in TASKS}
    variables = model.trainable_variables
    present = np.array([labelled(t, y[t.name]) for t in TASKS])
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        losses = tf.stack([losses_of[n](y[n], outputs[n]) for n in names])
        options = dict(method.options) | ({"seed": [method.seed, 0]} if method.seed is not None else {})
        loss = scalarization.scalarize(method.name, losses, present=present, state=state, **options)
    grads = tape.gradient(loss, variables)
    return {v.path: v.numpy() - LR * g.numpy() for v, g in zip(variables, grads)}


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    methods.GeometricMean(), methods.STCH(mu=0.2, weights=[0.2, 0.3, 0.5]), methods.PBI(theta=3.0, weights=[1.0, 2.0, 1.0]),
    methods.COSMOS(lambda_=1.5, weights=[0.3, 0.3, 0.4]), methods.IMTLL(), methods.UW(), methods.Scalarization("random", seed=4),
], ids=lambda m: m.name)
def test_one_step_is_the_hand_written_step_on_the_scalarized_loss(method, tmp_path):
    x, y = batch()
    y["smiling"][:] = -1  # a task without labels: its loss does not count
    model = build(0)
    model.compile(optimizer=keras.optimizers.SGD(LR), method=method)
    state = dict(zip(model.gradient_state.keys, model.gradient_state.slots)) if method.stateful else None
    expected = hand_step(model, x, y, method, state)
    model.train_on_batch(x, y)
    assert_weights(model, expected)
    if method.stateful:  # the learned parameters moved, and a saved model keeps them
        moved = model.gradient_state.slots[0].numpy()
        assert np.abs(moved).max() > 1e-3 and moved[0] == 0.0  # the absent task's did not
        model.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
        np.testing.assert_array_equal(loaded.gradient_state.slots[0].numpy(), moved)
