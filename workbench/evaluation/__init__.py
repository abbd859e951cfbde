"""Evaluation: metrics, the systems registry, the harness, abstention (calibration, selective answering, unanswerable questions), side effects, the report and its plots."""
