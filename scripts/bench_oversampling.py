#!/usr/bin/env python3
"""Write the oversampling benchmark data (200,000 rows x 20 features, 2%
minority, scikit-learn's make_classification with a fixed seed) to
target/bench-oversampling/, then time imbalanced-learn on it and print one
line per sampler: reference<TAB>name<TAB>seconds (median)<TAB>rows out."""

import os
import time
import warnings

import numpy as np
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler
from sklearn.datasets import make_classification

warnings.filterwarnings("ignore")
RUNS = int(os.environ.get("REFERENCE_RUNS", "3"))
root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "target", "bench-oversampling")
os.makedirs(root, exist_ok=True)
x, y = make_classification(n_samples=200_000, n_features=20, n_informative=10,
                           weights=[0.98], flip_y=0.01, random_state=0)
x.astype("<f8").tofile(os.path.join(root, "x.f64"))
y.astype("<i8").tofile(os.path.join(root, "y.i64"))

for name, make in [
    ("random_oversample", lambda: RandomOverSampler(random_state=0)),
    ("smote", lambda: SMOTE(random_state=0)),
    ("borderline_smote", lambda: BorderlineSMOTE(random_state=0)),
    ("adasyn", lambda: ADASYN(random_state=0)),
]:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        xr, _ = make().fit_resample(x, y)
        times.append(time.perf_counter() - started)
    print(f"reference\t{name}\t{sorted(times)[RUNS // 2]:.6f}\t{len(xr)}", flush=True)

# The neighbour searches alone, as imbalanced-learn makes them (scikit-learn's
# NearestNeighbors, algorithm 'auto': brute force through BLAS at 20
# features), against `cargo bench --bench knn`.
from sklearn.neighbors import NearestNeighbors  # noqa: E402

minority = x[y == 1]
for name, fitted, k in [
    ("knn_minority_vs_all", x, 11),
    ("knn_minority_vs_minority", minority, 6),
]:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        NearestNeighbors(n_neighbors=k).fit(fitted).kneighbors(minority)
        times.append(time.perf_counter() - started)
    print(f"reference\t{name}\t{sorted(times)[RUNS // 2]:.6f}\t{len(minority)}", flush=True)
