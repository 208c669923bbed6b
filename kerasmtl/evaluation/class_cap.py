"""How many classes a report shows one by one.

Past `CLASS_CAP` classes (a 1,000-class output), a table or a figure with one row, bar or
cell per class (pair) grows with the square of the classes and stops being read: the
confusion matrix alone would be a million cells. Reports then show the `CLASS_CAP`
classes with the most rows and the most frequent confusions, and keep every class's
scores in ``metrics.json`` (one entry per class: linear in the classes).
"""

from __future__ import annotations

import numpy as np

#: The most classes an output may have for its report to show each class (and each pair
#: of classes in the confusion matrix).
CLASS_CAP = 25
#: The confusions (true class, predicted class) listed for an output past `CLASS_CAP`.
TOP_CONFUSIONS = 20


def capped(classes: int) -> bool:
    """Whether an output of ``classes`` classes is summarised rather than shown in full."""
    return classes > CLASS_CAP


def most_frequent(counts, k: int = CLASS_CAP) -> np.ndarray:
    """Indices of the ``k`` largest ``counts``, largest first (ties: the lower index first)."""
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order[:k]
