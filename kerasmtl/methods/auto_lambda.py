"""Auto-Lambda (Liu et al., 2022, "Auto-Lambda: Disentangling Dynamic Task Relationships"):
task weights learned on a validation batch, as the authors' ``auto_lambda.py`` learns them.

The model trains on ``sum_i lambda_i L_i``. Before a step (every ``update_every`` steps) the
weights take one step of their own optimizer (Adam) on the gradient of the primary tasks'
validation loss after a virtual step of the model on the training batch:

- virtual step: ``theta' = theta - alpha * grad_theta sum_i lambda_i L_i(theta)``, ``alpha``
  the model optimizer's current learning rate;
- ``d = grad_theta' L_val(theta')`` on the next validation batch (primary tasks only);
- ``dL_val/dlambda_i = -alpha d . grad_theta L_i(theta)``, the product taken by central
  differences as the reference does: ``(L_i(theta + eps d) - L_i(theta - eps d)) / (2 eps)``
  with ``eps = 0.01 / |d|``, on the training batch.

The weights and their Adam moments are variables of the model's ``gradient_state`` layer
(not trainable by the model's optimizer), so they are saved and resumed with the model.
The virtual step is plain SGD: the reference also adds SGD's momentum buffer and weight
decay, which move ``theta'`` but do not depend on the weights; Keras keeps an optimizer's
buffers private, so they are left out (for plain SGD, as in a first step, the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from kerasmtl import backends
from kerasmtl.methods.base import Method

#: Adam's constants in the reference's meta optimizer (PyTorch's defaults).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


@keras.saving.register_keras_serializable(package="kerasmtl")
class AutoLambda(Method):
    """Auto-Lambda: the task weights, learned by a bilevel step on validation batches.

    Args:
        validation_data: ``(x, y)`` arrays (batched by ``batch_size``, shuffled, repeated)
            or a ``tf.data.Dataset`` of ``(x, y)`` batches (repeated); the validation
            batches the weights are learned on. Not saved: a loaded model needs it again
            to train (``model.method.validation_data = ...``).
        weight_init: each task's first weight (the reference's ``autol_init``, 0.1).
        lr: the weights' Adam learning rate (the reference's ``autol_lr``, 1e-4).
        primary: the tasks whose validation loss the weights minimise (None: all, the
            multi-task setting); the others are auxiliary tasks.
        update_every: steps between two weight updates (1: every step, as the reference).
        batch_size: validation batch size when ``validation_data`` is arrays.
        seed: seed of the validation batches' shuffle.
    """

    name = "auto_lambda"
    needs = "losses"
    stateful = True
    #: The weights are not the model optimizer's: their own Adam step updates them.
    trainable_state: tuple[str, ...] = ()
    #: Reads the validation batches from a tf.data iterator in the step: not under XLA.
    host = True

    def __init__(self, validation_data=None, weight_init: float = 0.1, lr: float = 1e-4,
                 primary: Sequence[str] | None = None, update_every: int = 1, batch_size: int = 32, seed: int = 0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0. Received: lr={lr!r}")
        if int(update_every) != update_every or update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1. Received: update_every={update_every!r}")
        self.validation_data = validation_data
        self.weight_init, self.lr = float(weight_init), float(lr)
        self.primary = None if primary is None else [str(t) for t in primary]
        self.update_every, self.batch_size, self.seed = int(update_every), int(batch_size), int(seed)
        self._batches = None

    def get_config(self) -> dict:
        return {"weight_init": self.weight_init, "lr": self.lr, "primary": self.primary,
                "update_every": self.update_every, "batch_size": self.batch_size, "seed": self.seed}

    def initial_state(self, tasks: int, dims: int | None = None) -> dict:
        zeros = tf.zeros([tasks], tf.float32)
        return {"weights": tf.fill([tasks], self.weight_init), "m": zeros, "v": zeros, "count": tf.zeros([], tf.float32)}

    def configure(self, model) -> None:
        """Checks the backend and the primary task names, and opens the validation batches.

        Raises:
            ValueError: not TensorFlow, or a primary task the model does not have.
        """
        if keras.backend.backend() != "tensorflow":
            raise ValueError(f"auto_lambda runs on the TensorFlow backend only. Received: {keras.backend.backend()!r}")
        names = [t.name for t in model.tasks]
        unknown = [t for t in self.primary or () if t not in names]
        if unknown:
            raise ValueError(f"primary must name tasks of the model {names}. Received: primary={self.primary!r}")
        self._open()

    def callback(self, model, y=None):
        """Opens the validation batches (given after ``compile``: a loaded model's); no callback."""
        self._open()
        return None

    def _open(self) -> None:
        """The repeated validation batches, as one iterator the step reads from."""
        if self._batches is not None or self.validation_data is None:
            return
        data = self.validation_data
        if not isinstance(data, tf.data.Dataset):
            x, y = data
            size = len(keras.tree.flatten(x)[0])
            data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(size, seed=self.seed).batch(self.batch_size)
        self._batches = iter(data.repeat())

    def total_loss(self, model, losses, y):
        weights = model.gradient_state.slot("weights")
        return sum(w * loss for w, loss in zip(tf.unstack(tf.convert_to_tensor(weights.value)), losses))

    def before_step(self, model, x, y, sample_weight) -> None:
        """Updates the weights on the training batch and the next validation batch, every
        `update_every` steps.

        Raises:
            ValueError: no validation data, or several replicas.
        """
        if self._batches is None:
            raise ValueError("AutoLambda learns its weights on validation batches: AutoLambda(validation_data=(x, y)), "
                             "a tf.data.Dataset of (x, y) batches, or model.method.validation_data = ... before training "
                             "a loaded model. Received: validation_data=None")
        replicas = backends.current().replicas()
        if replicas > 1:
            raise ValueError(f"auto_lambda runs on one device. Received: {replicas} replicas")
        due = tf.equal(model.optimizer.iterations % self.update_every, 0)
        tf.cond(due, lambda: self._update(model, x, y, sample_weight), lambda: tf.constant(False))

    def _update(self, model, x, y, sample_weight):
        state = model.gradient_state
        x_val, y_val = self._batches.get_next()
        names = [t.name for t in model.tasks]
        primary = tf.constant([float(self.primary is None or n in self.primary) for n in names])
        gradient = meta_gradient(model, x, y, sample_weight, x_val, y_val, state.slot("weights").value, primary,
                                 tf.cast(model.optimizer.learning_rate, tf.float32))
        new = adam(state.read(), gradient, self.lr)
        for key, value in new.items():
            state.slot(key).assign(value)
        return tf.constant(True)


def _task_losses(model, values, x, y, sample_weight):
    """Each task's weighted loss (its ``task_weighting`` weight times its loss) with the
    trainable variables at ``values``, through `keras.Model.stateless_call`."""
    fixed = [v.value for v in model.non_trainable_variables]
    y_pred, _ = model.stateless_call(values, fixed, x, training=True)
    losses = model.compute_task_losses(y, y_pred, sample_weight)
    return tf.stack([loss * tf.cast(w, tf.float32) for loss, w in zip(losses, model.task_weighting.values())])


def meta_gradient(model, x, y, sample_weight, x_val, y_val, weights, primary, alpha):
    """The gradient of the primary tasks' validation loss after the virtual step with
    respect to the task weights, ``-alpha (L(theta + eps d) - L(theta - eps d)) / (2 eps)``.

    Args:
        model: the compiled model (its trainable variables are theta).
        x, y, sample_weight: the training batch.
        x_val, y_val: the validation batch.
        weights: float32 ``(tasks,)``: the task weights.
        primary: float32 ``(tasks,)``: 1 for a primary task, 0 for an auxiliary one.
        alpha: the virtual step's learning rate.

    Returns:
        float32 ``(tasks,)``.
    """
    theta = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(theta)
        train = tf.reduce_sum(weights * _task_losses(model, theta, x, y, sample_weight))
    step = tape.gradient(train, theta, unconnected_gradients="zero")
    virtual = [t - alpha * g for t, g in zip(theta, step)]
    with tf.GradientTape() as tape:
        tape.watch(virtual)
        val = tf.reduce_sum(primary * _task_losses(model, virtual, x_val, y_val, None))
    d = tape.gradient(val, virtual, unconnected_gradients="zero")
    eps = 0.01 / tf.linalg.global_norm(d)
    plus = _task_losses(model, [t + eps * g for t, g in zip(theta, d)], x, y, sample_weight)
    minus = _task_losses(model, [t - eps * g for t, g in zip(theta, d)], x, y, sample_weight)
    return -alpha * (plus - minus) / (2.0 * eps)


def adam(state, gradient, lr):
    """One Adam step (PyTorch's, the reference's meta optimizer) of ``state["weights"]``
    with moments ``m``, ``v`` and step ``count``; returns the new state."""
    count = state["count"] + 1.0
    m = BETA_1 * state["m"] + (1.0 - BETA_1) * gradient
    v = BETA_2 * state["v"] + (1.0 - BETA_2) * tf.square(gradient)
    m_hat, v_hat = m / (1.0 - BETA_1 ** count), v / (1.0 - BETA_2 ** count)
    weights = state["weights"] - lr * m_hat / (tf.sqrt(v_hat) + EPSILON)
    return {"weights": weights, "m": m, "v": v, "count": count}
