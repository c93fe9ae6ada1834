#!/usr/bin/env python3
"""Write the iCost benchmark data (100,000 rows, 5% minority, scikit-learn's
make_classification with a fixed seed; one table with 20 features, one with
6) to target/bench-icost/, then time the PyPI package `icost` on each and
print one line per table: reference<TAB>name<TAB>seconds (median)<TAB>sum of
weights."""

import os
import time

import numpy as np
from icost import iCost
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

RUNS = int(os.environ.get("REFERENCE_RUNS", "3"))
root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "target", "bench-icost")
os.makedirs(root, exist_ok=True)

for features in (20, 6):
    x, y = make_classification(n_samples=100_000, n_features=features,
                               n_informative=min(10, features), n_redundant=0,
                               weights=[0.95], flip_y=0.01, random_state=0)
    name = f"d{features}"
    x.astype("<f8").tofile(os.path.join(root, f"{name}.x.f64"))
    y.astype("<i8").tofile(os.path.join(root, f"{name}.y.i64"))
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        w = iCost(LogisticRegression(), method="neighbor").compute_sample_weight(x, y)
        times.append(time.perf_counter() - started)
    print(f"reference\t{name}\t{sorted(times)[RUNS // 2]:.6f}\t{w.sum():.6f}", flush=True)
