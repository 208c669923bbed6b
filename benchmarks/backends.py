"""One epoch of the demo model and of ResNet50 on each Keras backend: TensorFlow, JAX and PyTorch.

The demo model is the command line's default (bottleneck tower, conv heads, 64 px images);
ResNet50 (random weights, dense heads) takes 64 px images too. Each has
four tasks, trained (Adam, batch ``--batch-size``) on in-memory data with missing labels
with the plain step and with UPGrad at the features and at the parameters level. Each backend runs in its own process (Keras picks its backend at
import); an epoch's time runs from one ``on_epoch_end`` to the next, so the first epoch
(tracing and compiling) is left out, and each backend's time is its fastest timed epoch.
The last line is ``jax_over_tf=<x> torch_over_tf=<y>`` (the plain step's epoch time over
TensorFlow's, for the demo model).

    python benchmarks/backends.py [--steps 20] [--epochs 3] [--batch-size 32] [--models demo resnet50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")
#: The steps timed: ``plain``, or ``<gradient method>:<level>``.
STEPS = ("plain", "upgrad:features", "upgrad:parameters")
#: The models timed: `kerasmtl.ModelBuilder` arguments (random weights: nothing is downloaded).
MODELS = {"demo": {"base": "bottleneck", "head": "conv"}, "resnet50": {"base": "resnet50", "head": "dense"}}


def child(model_name: str, steps: int, epochs: int, batch_size: int, step: str) -> None:
    """Times the fit in this process's backend and prints ``{"epoch": seconds}`` as JSON."""
    import keras
    import numpy as np
    from _timing import EpochTimer

    from kerasmtl import ModelBuilder, Task, methods

    tasks = [Task("gender", "binary", ("male", "female")), Task("age", "multiclass", ("a", "b", "c", "d")),
             Task("mood", "multiclass", ("x", "y", "z")), Task("glasses", "binary", ("no", "yes"))]
    rng = np.random.default_rng(0)
    n = steps * batch_size
    x = rng.integers(0, 256, (n, 64, 64, 3), dtype="uint8")
    y = {}
    for task in tasks:
        labels = rng.choice(list(task.classes), n).astype(object)
        labels[rng.random(n) < 0.3] = None
        y[task.name] = task.encode(labels)
    keras.utils.set_random_seed(0)
    model = ModelBuilder(tasks, input_shape=(64, 64, 3), **MODELS[model_name]).build()
    model.compile(method=None if step == "plain" else methods.get(*step.split(":")))
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer])
    print(json.dumps({"epoch": min(timer.times), "backend": keras.backend.backend()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first epoch compiles and is not timed). Received: {args.epochs}")
    if args.child:
        child(args.models[0], args.steps, args.epochs, args.batch_size, args.child)
        return
    times = {}
    print(f"{'model':<9} {'step':<18} " + " ".join(f"{b:>11}" for b in BACKENDS) + f"   (s per epoch of {args.steps} steps)")
    for model in args.models:
        for step in STEPS:
            for backend in BACKENDS:
                env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
                done = subprocess.run([sys.executable, __file__, "--child", step, "--models", model, "--steps", str(args.steps),
                                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)], env=env,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{backend} {model} {step}: {done.stderr[-2000:]}")
                times[model, step, backend] = json.loads(done.stdout.strip().splitlines()[-1])["epoch"]
            print(f"{model:<9} {step:<18} " + " ".join(f"{times[model, step, b]:>11.2f}" for b in BACKENDS), flush=True)
    if "demo" in args.models:
        plain = {b: times["demo", "plain", b] for b in BACKENDS}
        print(f"jax_over_tf={plain['jax'] / plain['tensorflow']:.2f} torch_over_tf={plain['torch'] / plain['tensorflow']:.2f}")


if __name__ == "__main__":
    main()
