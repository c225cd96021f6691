"""Scores of detections and flags against references, and the harnesses that produce the project's metrics.

``metrics`` (the one :class:`~pipeline.evaluate.metrics.Scores`: counts → precision, recall, F1, IoU, with
one rule for empty classes), ``objects`` (flag polygons matched to truth polygons, PR curve, truth burnt
onto a grid), ``oscd`` (the OSCD benchmark harness of ``compoundwatch evaluate oscd``) and ``cases`` (the
Dabancheng and Taizhou case studies). Import the modules; this package file imports nothing, so the training
code can use ``metrics`` without loading the harnesses.
"""
