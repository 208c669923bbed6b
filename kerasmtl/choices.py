"""The names the package's settings accept: one tuple per concept.

The module that implements a concept takes its tuple from here (`kerasmtl.heads.HEADS` is
`HEADS`), and so does the command line, which checks its flags against them. This module
imports nothing, so ``kerasmtl --help`` and a bad flag answer without TensorFlow:
`kerasmtl_cli` reads the file without running ``kerasmtl/__init__.py``, which imports Keras
to register the package's objects. Where a concept's implementation is a table of its own
(`kerasmtl.training.OPTIMIZERS`, `kerasmtl.distribute.MIXED_PRECISION`, the gradient
methods of `kerasmtl.aggregation`), tests/test_cli.py and tests/test_methods.py keep the
table's names equal to the tuple here. Towers, presets and augmentation pipelines are registries that fill at
import; the command line checks those after it imports the package.
"""

#: Multi-task architectures (`kerasmtl.architectures`).
ARCHITECTURES = ("hps", "mmoe", "cgc", "ple", "mtan", "cross_stitch", "dselect_k")
#: Architectures whose tasks share no single representation: no gradient method at the features.
PER_TASK_ARCHITECTURES = ("mtan",)
#: Head towers (`kerasmtl.heads.head_layers`).
HEADS = ("dense", "conv")
#: Loss-weighting strategies (`kerasmtl.weighting`, `kerasmtl.callbacks.DynamicTaskWeights`).
WEIGHTINGS = ("static", "dst", "dwa", "uncertainty")
#: What DST counts per output (`kerasmtl.callbacks.DynamicTaskWeights`'s ``count``).
DST_COUNTS = ("labelled", "positives")
#: Optimizers by name (`kerasmtl.training.make_optimizer`).
OPTIMIZERS = ("adam", "adamax", "adamw", "rmsprop", "sgd")
#: Learning-rate schedules of a training run (`kerasmtl.workflow.learning_rate`).
LR_SCHEDULES = ("constant", "cosine")
#: Distribution strategies (`kerasmtl.distribute.make_strategy`).
DISTRIBUTION_STRATEGIES = ("none", "mirrored", "multiworker")
#: Mixed-precision settings (`kerasmtl.distribute.mixed_precision`).
MIXED_PRECISION = ("off", "float16", "bfloat16")
#: What a training run feeds ``fit`` (`kerasmtl.workflow.training_input`).
INPUTS = ("generator", "tfdata", "files")
#: Keras backends (``KERAS_BACKEND``; ``--backend`` sets it before Keras is imported).
BACKENDS = ("tensorflow", "jax", "torch")
#: Export formats and quantisations (`kerasmtl.export.export`).
EXPORT_FORMATS = ("saved_model", "onnx", "litert", "openvino")
QUANTIZATIONS = ("float16", "int8", "bfloat16")
#: The quantisations of each export format (``--quantize``).
FORMAT_QUANTIZATIONS = {"litert": ("float16", "int8"), "onnx": ("int8",), "openvino": ("int8", "bfloat16")}
#: Losses of a binary task (`kerasmtl.Task`'s ``loss``).
LOSSES = ("default", "mse", "weighted_bce", "weighted_bce_sqrt", "focal")
#: Criteria of threshold calibration (`kerasmtl.evaluation.thresholds`).
CALIBRATIONS = ("f1", "balanced_accuracy")
#: The learning-rate range test's sweeps and the rules of its suggestion
#: (`kerasmtl.callbacks.lr_range_test`'s ``SWEEP_MODES`` and ``SUGGESTION_RULES``).
LR_SWEEP_MODES = ("exp", "linear")
LR_SUGGESTION_RULES = ("valley", "steep", "minimum")
#: Gradient methods (`kerasmtl.methods.get`'s ``gradient_method``: the aggregators of
#: `kerasmtl.aggregation`, the loss-level methods and their other names) and the levels
#: they act at.
GRADIENT_METHODS = ("mean", "sum", "random", "pcgrad", "mgda", "cagrad", "imtl_g", "aligned_mtl", "upgrad", "dualproj",
                    "config", "nash_mtl", "gradvac", "fairgrad", "constant", "krum", "pcd", "modo", "sdmgrad", "cr_mogm",
                    "excess_mtl", "graddrop", "trimmed_mean", "gradnorm", "famo", "db_mtl", "moco", "rlw")
GRADIENT_LEVELS = ("features", "parameters")
#: Scalarizations that are methods by name (`kerasmtl.methods.scalarizers.NAMES`).
SCALARIZATIONS = ("geometric_mean", "stch", "pbi", "cosmos", "imtl_l", "uw")
#: Multi-task methods (`kerasmtl.methods.get`, ``--method``): the loss weightings, the
#: gradient methods, the scalarizations, then the bilevel Auto-Lambda.
METHODS = WEIGHTINGS + GRADIENT_METHODS + SCALARIZATIONS + ("auto_lambda",)


def split_method(method, task_weighting, gradient_method):
    """``(task weighting, other method)`` of ``--method`` and its older names
    ``--task-weighting`` and ``--gradient-method`` (None: not given); the other method is a
    gradient method or a scalarization, which the run compiles the model with.

    The older names may be given together (a loss weighting and a gradient method in one
    run); ``--method`` names one method, and either older name may only repeat it.

    Raises:
        ValueError: ``--method`` with an older name that says something else.
    """
    if method is None:
        return task_weighting, gradient_method
    weighting = method in WEIGHTINGS
    same, other = (task_weighting, gradient_method) if weighting else (gradient_method, task_weighting)
    if same not in (None, method) or other is not None:
        raise ValueError("--method names the run's one multi-task method; --task-weighting and --gradient-method are "
                         f"its older names. Received: --method {method}, --task-weighting {task_weighting}, "
                         f"--gradient-method {gradient_method}")
    return (method, None) if weighting else (None, method)


def strategy_problem(strategy: str, backend: str) -> str | None:
    """Why ``--strategy`` cannot run on ``backend`` (None: it can). TensorFlow runs every
    strategy; JAX runs ``mirrored`` as Keras's ``DataParallel`` over one machine's devices
    (no cluster); Keras 3's torch backend has no distribution, so PyTorch runs on one device."""
    if strategy == "none" or backend == "tensorflow" or (backend == "jax" and strategy == "mirrored"):
        return None
    if backend == "jax":
        return ("--strategy multiworker is TensorFlow's MultiWorkerMirroredStrategy (a TF_CONFIG cluster); on JAX "
                "kerasmtl trains on one machine's devices: --strategy mirrored (Keras's DataParallel). "
                f"Received: --strategy {strategy}, --backend jax")
    return (f"--strategy {strategy}: Keras 3's {backend} backend has no distribution (keras.distribution runs on JAX), "
            "so kerasmtl trains on one device there: use --strategy none, or --backend jax or tensorflow. "
            f"Received: --strategy {strategy}, --backend {backend}")


def check_methods(methods, config) -> list[str]:
    """The methods of a comparison (``kerasmtl compare-methods``), checked: known methods
    (`METHODS`), each once, and a config that leaves the method to the comparison and
    trains builder models.

    Raises:
        ValueError: naming the rule and the value received.
    """
    methods = list(methods)
    if not methods:
        raise ValueError("--methods needs at least one method. Received: none")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods takes the multi-task methods {list(METHODS)}. Received: {unknown}")
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ValueError(f"--methods names each method once. Received: {repeated} more than once")
    if config.method or config.task_weighting or config.gradient_method:
        raise ValueError("--methods sets each run's --method; leave those flags out (--method, --task-weighting, "
                         "--gradient-method). "
                         f"Received: method={config.method!r}, task_weighting={config.task_weighting!r}, "
                         f"gradient_method={config.gradient_method!r}")
    if config.model:
        raise ValueError("the comparison trains builder models (--base): a --model preset has fixed tasks and "
                         f"no single-task model of each. Received: --model {config.model}")
    return methods
