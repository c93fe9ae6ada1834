#!/usr/bin/env python3
"""What iCost weights do to a weighted logistic regression.

For every binary data set under ../shared/data (skipped with a message when
the folder is absent): stratified 5-fold cross-validation with a fixed seed.
On each training fold (missing values imputed with the fold's medians),
Equipoise's `icost` computes per-row weights through `equipoise sql`:
`method=cs` (plain class weights: IR for the minority, 1 for the majority),
`method=neighbor` (Neighbor-iCost, the default) and `method=gini`. The same
logistic regression (standardized features, L2, lbfgs) is fitted with each
weighting, and without weights, and scored on the untouched test fold with
Macro-F1 and G-mean. As a check, Neighbor-iCost's weights are compared with
the `icost` package's on every fold (they differ only where a tie at the
k-th distance mixes classes; the count is reported).

Writes docs/benchmarks/icost.md.
"""

import csv
import os
import subprocess
import sys
import tempfile
import warnings

import icost
import numpy as np
import sklearn
from icost import iCost
from imblearn.metrics import geometric_mean_score
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))
SEED = 0
FOLDS = 5
WEIGHTINGS = ["none", "cs", "neighbor", "gini"]


def binary_datasets():
    found = []
    for group in sorted(os.listdir(DATA)):
        folder = os.path.join(DATA, group)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".csv"):
                continue
            path = os.path.join(folder, name)
            data = np.genfromtxt(path, delimiter=",", skip_header=1)
            y = data[:, -1]
            if set(np.unique(y[~np.isnan(y)])) == {0.0, 1.0}:
                found.append((f"{group}/{name[:-4]}", data[:, :-1], y.astype(int)))
    return found


def equipoise_weights(binary, mode, x, y, workdir):
    path = os.path.join(workdir, "train.csv")
    with open(path, "w") as f:
        f.write(",".join(["rid"] + [f"f{i}" for i in range(x.shape[1])] + ["label"]) + "\n")
        for i, (row, label) in enumerate(zip(x, y)):
            f.write(",".join([str(i)] + [repr(float(v)) for v in row]) + f",{int(label)}\n")
    query = (
        f"SELECT rid, sample_weight FROM icost('t', 'label', 'method={mode}, seed={SEED}, "
        f"exclude=rid') ORDER BY rid"
    )
    out = subprocess.run(
        [binary, "sql", "--table", f"t={path}", "--format", "csv", query],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    rows = list(csv.reader(out.stdout.splitlines()))[1:]
    return np.array([float(r[1]) for r in rows])


def main():
    if not os.path.isdir(DATA):
        print(f"skipped: {DATA} is absent")
        return
    binary = os.path.join(ROOT, "target", "release", "equipoise")
    datasets = binary_datasets()
    scores = {}  # (dataset, weighting) -> (macro f1, g-mean)
    tie_rows = 0
    weighed_rows = 0
    with tempfile.TemporaryDirectory() as workdir:
        for name, x_all, y_all in datasets:
            folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
            per = {w: ([], []) for w in WEIGHTINGS}
            for train, test in folds.split(x_all, y_all):
                x, y = x_all[train].copy(), y_all[train]
                xt = x_all[test].copy()
                medians = np.nanmedian(x, axis=0)
                medians = np.where(np.isnan(medians), 0.0, medians)
                for data in (x, xt):
                    rows, cols = np.where(np.isnan(data))
                    data[rows, cols] = medians[cols]
                weights = {"none": None}
                for mode in ("cs", "neighbor", "gini"):
                    weights[mode] = equipoise_weights(binary, mode, x, y, workdir)
                reference = iCost(LogisticRegression(), method="neighbor").compute_sample_weight(x, y)
                minority = reference != 1.0
                tie_rows += int((np.abs(reference - weights["neighbor"]) > 1e-9).sum())
                weighed_rows += int(minority.sum())
                scaler = StandardScaler().fit(x)
                for w in WEIGHTINGS:
                    model = LogisticRegression(max_iter=2000)
                    model.fit(scaler.transform(x), y, sample_weight=weights[w])
                    predicted = model.predict(scaler.transform(xt))
                    per[w][0].append(f1_score(y_all[test], predicted, average="macro", zero_division=0))
                    per[w][1].append(geometric_mean_score(y_all[test], predicted))
            for w in WEIGHTINGS:
                scores[(name, w)] = (float(np.mean(per[w][0])), float(np.mean(per[w][1])))
            print(name, {w: tuple(round(v, 3) for v in scores[(name, w)]) for w in WEIGHTINGS},
                  flush=True)

    names = [d[0] for d in datasets]
    lines = [
        "# iCost weights in a weighted logistic regression",
        "",
        f"Generated by `scripts/eval-icost` (scikit-learn {sklearn.__version__}, icost "
        f"{icost.__version__} for the check); do not edit by hand.",
        "",
        f"{len(names)} binary data sets from `../shared/data`, stratified {FOLDS}-fold "
        "cross-validation (seed 0), training-fold medians for missing values. Weights from "
        "Equipoise's `icost` on the raw training features (`method=cs`: IR for the minority; "
        "`neighbor`: Neighbor-iCost; `gini`: Gini-iCost); the same logistic regression "
        "(standardized features, L2, lbfgs) fitted with each; mean over folds on the test folds.",
        "",
        f"Check against the `icost` package: {tie_rows} of {weighed_rows} minority rows "
        "weighed differently by `method=neighbor` over all folds (rows with a class-mixed tie "
        "at the k-th distance; see docs/icost.md).",
        "",
    ]
    for m, metric in enumerate(["Macro-F1", "G-mean"]):
        lines += [f"## {metric}", "", "| data set | " + " | ".join(WEIGHTINGS) + " |",
                  "|---|" + "---:|" * len(WEIGHTINGS)]
        for name in names:
            row = [scores[(name, w)][m] for w in WEIGHTINGS]
            best = max(row)
            cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in row]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        means = [np.mean([scores[(n, w)][m] for n in names]) for w in WEIGHTINGS]
        lines.append("| **mean** | " + " | ".join(f"{v:.3f}" for v in means) + " |")
        wins = sum(scores[(n, "neighbor")][m] > scores[(n, "cs")][m] for n in names)
        ties = sum(scores[(n, "neighbor")][m] == scores[(n, "cs")][m] for n in names)
        lines += ["", f"Neighbor-iCost against plain class weights: {wins} wins, {ties} ties, "
                  f"{len(names) - wins - ties} losses.", ""]
    path = os.path.join(ROOT, "docs", "benchmarks", "icost.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
