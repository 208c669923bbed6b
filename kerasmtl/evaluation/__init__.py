"""Evaluation of a trained model: `metrics` per task, the `report` (``metrics.json``,
``report.md``) and the `figures`."""
