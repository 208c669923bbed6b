"""Multi-task architectures: a layer from the shared representation to one representation
per task (`kerasmtl.MultiTaskModel`'s ``architecture`` part).

Named after LibMTL's ``LibMTL/architecture/`` (whose experts and towers are whole encoders;
here they sit on the backbone's output, so that any backbone serves):

- ``hps``: hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 1997):
  every head reads the backbone's output; no layer (the default).
- ``mmoe``: `MMoE`, shared experts and one softmax gate per task.
- ``cgc``: `CGC`, shared experts and each task's own, one gate per task.
- ``ple``: `PLE`, CGC levels stacked, lower levels with a shared gate.
- ``mtan``: `MTAN`, per-task attention modules over the backbone's stages.
- ``cross_stitch``: `CrossStitch`, one tower per task, mixed by cross-stitch units.
- ``dselect_k``: `DSelectK`, shared experts with sparse top-k gates.

Every layer here is registered with Keras and reloads with ``safe_mode=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from kerasmtl import choices
from kerasmtl.architectures.cgc import CGC
from kerasmtl.architectures.cross_stitch import CrossStitch
from kerasmtl.architectures.dselect_k import DSelectK
from kerasmtl.architectures.mmoe import MMoE
from kerasmtl.architectures.mtan import MTAN
from kerasmtl.architectures.ple import PLE

#: The architectures (`make_architecture`'s ``architecture``).
ARCHITECTURES = choices.ARCHITECTURES
#: Architectures that read the backbone's stages (a list of stage outputs) rather than its output.
STAGED = ("mtan",)
_LAYERS = {"mmoe": MMoE, "cgc": CGC, "ple": PLE, "mtan": MTAN, "cross_stitch": CrossStitch, "dselect_k": DSelectK}


def architecture_options(architecture: str) -> list[str]:
    """The options ``architecture``'s layer takes."""
    if architecture == "hps":
        return []
    skip = {"self", "task_names", "kwargs", "shared_output"}
    names = [name for name in inspect.signature(_LAYERS[architecture].__init__).parameters if name not in skip]
    return names + (["stages"] if architecture in STAGED else [])


def make_architecture(architecture: str, task_names: Sequence[str], options: Mapping | None = None):
    """The layer of ``architecture`` for ``task_names`` (named after the architecture), or
    None for ``hps``.

    Args:
        architecture: one of `ARCHITECTURES`.
        task_names: the tasks.
        options: the layer's options (e.g. ``{"num_experts": 4, "units": 64}``).

    Returns:
        A layer whose call maps the shared representation (for `STAGED` ones, the list of
        the backbone's stage outputs) to ``{task name: representation}``; None for ``hps``.

    Raises:
        ValueError: an unknown architecture or option, naming the received value.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}. Received: architecture={architecture!r}")
    options = dict(options or {})
    known = architecture_options(architecture)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"Options of the {architecture} architecture are {known}. Received: {unknown}")
    if architecture == "hps":
        return None
    options.pop("stages", None)  # how many of the backbone's stages: the backbone's part (`stage_count`)
    return _LAYERS[architecture](list(task_names), name=architecture, **options)


def stage_count(options: Mapping | None) -> int:
    """How many of the backbone's last stages a `STAGED` architecture reads (option ``stages``, 4)."""
    count = int(dict(options or {}).get("stages", 4))
    if count < 2:
        raise ValueError(f"A staged architecture reads at least 2 stages. Received: stages={count}")
    return count


__all__ = ["ARCHITECTURES", "CGC", "CrossStitch", "DSelectK", "MMoE", "MTAN", "PLE", "STAGED",
           "architecture_options", "make_architecture", "stage_count"]
