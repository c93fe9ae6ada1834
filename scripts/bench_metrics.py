#!/usr/bin/env python3
"""Time scikit-learn / imbalanced-learn on the rows that `cargo bench --bench
metrics` wrote to target/bench-metrics/, and print one line per metric:
reference<TAB>name<TAB>seconds (median)<TAB>value."""

import os
import sys
import time
import warnings

import numpy as np
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

warnings.filterwarnings("ignore")
RUNS = int(os.environ.get("REFERENCE_RUNS", "3"))
root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "bench-metrics")
label = np.fromfile(os.path.join(root, "label.i64"), dtype="<i8")
prediction = np.fromfile(os.path.join(root, "prediction.i64"), dtype="<i8")
score = np.fromfile(os.path.join(root, "score.f64"), dtype="<f8")
score_fine = np.fromfile(os.path.join(root, "score_fine.f64"), dtype="<f8")

for name, fn in [
    ("macro_f1", lambda: f1_score(label, prediction, average="macro", zero_division=0)),
    ("gmean", lambda: geometric_mean_score(label, prediction)),
    ("roc_auc", lambda: roc_auc_score(label, score)),
    ("pr_auc", lambda: average_precision_score(label, score)),
    ("roc_auc distinct", lambda: roc_auc_score(label, score_fine)),
    ("pr_auc distinct", lambda: average_precision_score(label, score_fine)),
]:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    print(f"reference\t{name}\t{sorted(times)[RUNS // 2]:.6f}\t{value!r}", flush=True)
