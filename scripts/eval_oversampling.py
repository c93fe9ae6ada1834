#!/usr/bin/env python3
"""Evaluate Equipoise's oversamplers against imbalanced-learn's.

For every binary data set under ../shared/data (skipped with a message when
the folder is absent): repeated stratified 5-fold cross-validation with fixed
seeds (3 repeats by default, as the QC-SMOTE paper evaluates: one 5-fold run
moves a sampler's mean rank by about half a rank from its random draws
alone; repeat r shuffles the folds with seed r and gives every sampler seed r).
Each training fold is over-sampled by every Equipoise operator (through
`equipoise sql` on a CSV of the fold) and by imbalanced-learn's SMOTE,
BorderlineSMOTE, ADASYN and SMOTEENN (and left alone); the same scikit-learn
classifiers (logistic regression on standardized features, a decision tree,
a random forest; fixed seeds) are trained on it and scored on the untouched
test fold with Macro-F1, ROC-AUC and G-mean. Missing values are imputed with
the training fold's medians before anything else, for every method alike.

Writes docs/benchmarks/oversampling.md: mean ranks (1 = best; per data set
and classifier, averaged), the Nemenyi critical difference of those ranks,
and per-data-set means over classifiers.

Usage: scripts/eval-oversampling [--datasets a,b] [--qc-options 'k=5, ...']
       [--only SAMPLER] [--repeats 3]

Scores are cached per data set and sampler in
target/eval-oversampling-cache.json; `--only "equipoise qc_smote"` recomputes
that sampler (a comma-separated list of name prefixes, e.g. "equipoise",
also works) and takes the others from the cache (for tuning runs). A cache
entry is keyed by the protocol too, so runs with other repeat counts do not
mix.
"""

import json

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from scipy.stats import studentized_range
from imblearn.combine import SMOTEENN
from imblearn.metrics import geometric_mean_score
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
import imblearn
import sklearn

warnings.filterwarnings("ignore")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))
SEED = 0
FOLDS = 5

EQUIPOISE = ["random_oversample", "smote", "borderline_smote", "adasyn", "qc_smote"]
IMBLEARN = {
    "imblearn SMOTE": lambda seed: SMOTE(random_state=seed),
    "imblearn BorderlineSMOTE": lambda seed: BorderlineSMOTE(random_state=seed),
    "imblearn ADASYN": lambda seed: ADASYN(random_state=seed),
    "imblearn SMOTEENN": lambda seed: SMOTEENN(random_state=seed),
}
SAMPLERS = ["none"] + list(IMBLEARN) + [f"equipoise {m}" for m in EQUIPOISE]
CLASSIFIERS = {
    "LR": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    "DT": lambda: DecisionTreeClassifier(random_state=SEED),
    "RF": lambda: RandomForestClassifier(n_estimators=100, random_state=SEED, n_jobs=-1),
}
METRICS = ["Macro-F1", "ROC-AUC", "G-mean"]


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
            with open(path) as f:
                header = next(csv.reader(f))
            data = np.genfromtxt(path, delimiter=",", skip_header=1)
            y = data[:, -1]
            if set(np.unique(y[~np.isnan(y)])) == {0.0, 1.0}:
                found.append((f"{group}/{name[:-4]}", header, data[:, :-1], y.astype(int)))
    return found


def write_csv(path, header, x, y):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{int(label)}\n")


def equipoise_resample(binary, method, header, x, y, workdir, seed, extra=""):
    train = os.path.join(workdir, "train.csv")
    write_csv(train, header, x, y)
    options = f"seed={seed}" + (f", {extra}" if extra else "")
    query = f"SELECT * FROM {method}('t', 'label', '{options}')"
    out = subprocess.run(
        [binary, "sql", "--table", f"t={train}", "--format", "csv", query],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    rows = list(csv.reader(out.stdout.splitlines()))
    names = rows[0]
    width = len(header) - 1
    assert names[: width + 1] == header, (names, header)
    values = np.array([[float(v) for v in r[: width + 1]] for r in rows[1:]])
    return values[:, :width], values[:, width].astype(int)


def rank_rows(scores):
    """Ranks (1 = best, ties averaged) of one row of scores."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def critical_difference(n_samplers, n_blocks, alpha=0.05):
    """Nemenyi critical difference (Demsar 2006) of mean ranks over
    `n_blocks` rankings of `n_samplers`: two mean ranks further apart than
    this differ at level `alpha`."""
    q = studentized_range.ppf(1 - alpha, n_samplers, np.inf) / np.sqrt(2)
    return q * np.sqrt(n_samplers * (n_samplers + 1) / (6 * n_blocks))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/equipoise"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks/oversampling.md"))
    parser.add_argument("--qc-options", default="")
    parser.add_argument("--only", default="")
    parser.add_argument("--cache", default=os.path.join(ROOT, "target/eval-oversampling-cache.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    # One 5-fold run keeps the key of earlier caches.
    protocol = "" if args.repeats == 1 else f"|{args.repeats}x{FOLDS}"
    cache = {}
    if os.path.exists(args.cache):
        with open(args.cache) as f:
            cache = json.load(f)
    if not os.path.isdir(DATA):
        print(f"skipped: shared data folder {DATA} is absent")
        return 0
    wanted = [d for d in args.datasets.split(",") if d]
    datasets = [d for d in binary_datasets() if not wanted or any(w in d[0] for w in wanted)]
    # scores[dataset][classifier][sampler][metric] = mean over folds
    scores = {}
    failures = []
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for name, header, x_all, y_all in datasets:
            t0 = time.time()
            per = {c: {s: {m: [] for m in METRICS} for s in SAMPLERS} for c in CLASSIFIERS}
            splits = [
                (SEED + r, train_idx, test_idx)
                for r in range(args.repeats)
                for train_idx, test_idx in StratifiedKFold(
                    n_splits=FOLDS, shuffle=True, random_state=SEED + r
                ).split(x_all, y_all)
            ]
            for seed, train_idx, test_idx in splits:
                x_train, y_train = x_all[train_idx], y_all[train_idx]
                x_test, y_test = x_all[test_idx], y_all[test_idx]
                medians = np.nanmedian(x_train, axis=0)
                medians = np.where(np.isnan(medians), 0.0, medians)
                x_train = np.where(np.isnan(x_train), medians, x_train)
                x_test = np.where(np.isnan(x_test), medians, x_test)
                for sampler in SAMPLERS:
                    recompute = not args.only or any(
                        sampler.startswith(o.strip()) for o in args.only.split(",")
                    )
                    if not recompute and f"{name}|{sampler}{protocol}" in cache:
                        continue
                    try:
                        if sampler == "none":
                            xr, yr = x_train, y_train
                        elif sampler in IMBLEARN:
                            xr, yr = IMBLEARN[sampler](seed).fit_resample(x_train, y_train)
                        else:
                            method = sampler.split(" ", 1)[1]
                            extra = args.qc_options if method == "qc_smote" else ""
                            xr, yr = equipoise_resample(
                                args.binary, method, header, x_train, y_train, workdir, seed,
                                extra,
                            )
                    except Exception as e:  # recorded, then trained without resampling
                        failures.append(f"{name}: {sampler}: {str(e).splitlines()[0][:160]}")
                        xr, yr = x_train, y_train
                    for cname, make in CLASSIFIERS.items():
                        model = make().fit(xr, yr)
                        pred = model.predict(x_test)
                        proba = model.predict_proba(x_test)[:, 1]
                        per[cname][sampler]["Macro-F1"].append(
                            f1_score(y_test, pred, average="macro", zero_division=0))
                        per[cname][sampler]["ROC-AUC"].append(roc_auc_score(y_test, proba))
                        per[cname][sampler]["G-mean"].append(geometric_mean_score(y_test, pred))
            scores[name] = {c: {} for c in CLASSIFIERS}
            for sampler in SAMPLERS:
                key = f"{name}|{sampler}{protocol}"
                if per[next(iter(CLASSIFIERS))][sampler]["Macro-F1"]:
                    cache[key] = {
                        c: {m: float(np.mean(v)) for m, v in per[c][sampler].items()}
                        for c in CLASSIFIERS
                    }
                for c in CLASSIFIERS:
                    scores[name][c][sampler] = cache[key][c]
            with open(args.cache, "w") as f:
                json.dump(cache, f)
            print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr)

    lines = [
        "# Oversampling evaluation",
        "",
        f"Generated by `scripts/eval-oversampling` in {time.time() - started:.0f} s "
        f"(scikit-learn {sklearn.__version__}, imbalanced-learn {imblearn.__version__}). "
        + (f"Stratified {FOLDS}-fold cross-validation (shuffle, seed {SEED})"
           if args.repeats == 1 else
           f"Stratified {FOLDS}-fold cross-validation repeated {args.repeats} times (repeat r: "
           "folds shuffled with seed r, every sampler seeded with r; scores are means over "
           f"all {args.repeats * FOLDS} folds)")
        + " on every binary data set under `../shared/data`; training folds median-imputed, "
        "then over-sampled (default options, `sampling_strategy='auto'`); classifiers: "
        "LR (standardized logistic regression), DT (decision tree), RF (random forest, 100 trees), fixed seeds; the test "
        "folds are never resampled."
        + (f" QC-SMOTE options: `{args.qc_options}`." if args.qc_options else "")
        + (f" Recomputed in this run: `{args.only}`; the other samplers' scores come from the "
           "cache of an earlier run on the same data and folds." if args.only else ""),
        "",
        "## Mean rank (1 = best)",
        "",
        "Ranks are taken per data set and classifier over all samplers (ties share the mean "
        "rank), then averaged over data sets and classifiers.",
        "",
        "| sampler | " + " | ".join(METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    mean_ranks = {s: {} for s in SAMPLERS}
    for metric in METRICS:
        acc = {s: [] for s in SAMPLERS}
        for name in scores:
            for cname in CLASSIFIERS:
                row = [scores[name][cname][s][metric] for s in SAMPLERS]
                for s, r in zip(SAMPLERS, rank_rows(row)):
                    acc[s].append(r)
        for s in SAMPLERS:
            mean_ranks[s][metric] = float(np.mean(acc[s])) if acc[s] else float("nan")
    oversamplers = [s for s in SAMPLERS if s != "none"]
    best = {m: min(oversamplers, key=lambda s: mean_ranks[s][m]) for m in METRICS}
    for s in SAMPLERS:
        cells = []
        for m in METRICS:
            cell = f"{mean_ranks[s][m]:.2f}"
            cells.append(f"**{cell}**" if best[m] == s else cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Best oversampler (bold) per metric: " + ", ".join(f"{m}: {best[m]}" for m in METRICS), ""]
    # Whether the best mean rank is a clear lead or within chance: the
    # rankings (one per data set and classifier) are the blocks. Treating a
    # data set's three rankings as independent makes the difference smaller
    # than over data sets alone, so a lead below it is certainly not shown.
    blocks = len(scores) * len(CLASSIFIERS)
    if blocks:
        cd = critical_difference(len(SAMPLERS), blocks)
        lines += [
            f"Nemenyi critical difference (alpha = 0.05, {len(SAMPLERS)} samplers, {blocks} "
            f"rankings): {cd:.2f}. Two mean ranks closer than this are not shown to differ. "
            "Per metric, the best oversampler's lead over the next best: "
            + ", ".join(
                f"{m} {min(mean_ranks[s][m] for s in oversamplers if s != best[m]) - mean_ranks[best[m]][m]:.2f}"
                for m in METRICS
            )
            + ".",
            "",
        ]
    # Which classifier a mean rank comes from: a sampler that cleans the
    # majority class (SMOTEENN) helps an unpruned tree most.
    lines += ["## Mean rank per classifier (1 = best)", "",
              "| sampler | " + " | ".join(f"{m} {c}" for m in METRICS for c in CLASSIFIERS) + " |",
              "|---|" + "---:|" * (len(METRICS) * len(CLASSIFIERS))]
    per_classifier = {s: [] for s in SAMPLERS}
    for metric in METRICS:
        for cname in CLASSIFIERS:
            acc = {s: [] for s in SAMPLERS}
            for name in scores:
                row = [scores[name][cname][s][metric] for s in SAMPLERS]
                for s, r in zip(SAMPLERS, rank_rows(row)):
                    acc[s].append(r)
            for s in SAMPLERS:
                per_classifier[s].append(float(np.mean(acc[s])) if acc[s] else float("nan"))
    for s in SAMPLERS:
        lines.append(f"| {s} | " + " | ".join(f"{r:.2f}" for r in per_classifier[s]) + " |")
    lines.append("")
    for metric in METRICS:
        lines += [f"## {metric} per data set (mean over classifiers)", ""]
        short = [s.replace("imblearn ", "i:").replace("equipoise ", "e:") for s in SAMPLERS]
        lines.append("| data set | " + " | ".join(short) + " |")
        lines.append("|---|" + "---:|" * len(SAMPLERS))
        for name in scores:
            vals = [np.mean([scores[name][c][s][metric] for c in CLASSIFIERS]) for s in SAMPLERS]
            top = max(vals)
            cells = [f"**{v:.3f}**" if v == top else f"{v:.3f}" for v in vals]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if failures:
        lines += ["## Failures (trained without resampling instead)", ""]
        lines += [f"- {f}" for f in failures]
        lines.append("")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[: 14 + len(SAMPLERS)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
