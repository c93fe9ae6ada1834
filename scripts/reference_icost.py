#!/usr/bin/env python3
"""Regenerate the expected iCost weights from the PyPI package `icost` 0.3.0.

Writes tables to tests/data/icost/*.csv, each row carrying the reference
weight (`expected_weight`) and, for binary tables, the reference category
(`expected_category`), and the sqllogictest file tests/slt/icost_reference.slt,
which counts the rows where Equipoise's `icost` agrees (all of them).

Ties: scikit-learn's neighbour search breaks a tie at the k-th distance by
its tree traversal order, Equipoise by row order. Where such a tie mixes
classes, the two can differ, so every table written here is checked to have
no such row (the generator retries another seed otherwise); duplicates and
ties that do not straddle classes are included on purpose. The script also
reports, for a grid table that does have mixed ties, how many rows differ.

Run it through scripts/reference-icost, which creates the virtual
environment with the pinned versions.
"""

import os

import icost
import numpy as np
import sklearn
from icost import iCost
from sklearn.linear_model import LogisticRegression

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = "tests/data/icost"
DEFAULT_COSTS = {"cfp": 0.30, "cfs": 0.50, "cfb": 0.70, "cfo": 0.10}


def estimator(**kw):
    return iCost(LogisticRegression(), method=kw.pop("method", "neighbor"), **kw)


def ambiguous_rows(x, y, weighed_class, k):
    """Rows of `weighed_class` whose count of other-class rows among the k
    nearest depends on how a tie at the k-th distance is broken."""
    out = []
    for i in np.flatnonzero(y == weighed_class):
        d = ((x - x[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        kth = np.sort(d)[k - 1]
        strict = d < kth
        tie = d == kth
        need = k - strict.sum()
        other_tied = (y[tie] != weighed_class).sum()
        same_tied = tie.sum() - other_tied
        lo = max(0, need - same_tied)
        hi = min(need, other_tied)
        if lo != hi:
            out.append(i)
    return out


def lower_index_rule(x, y, minority, k=5):
    """Neighbor-iCost weights with ties at the k-th distance broken by the
    lower row index (Equipoise's rule), by brute force."""
    n_min = int((y == minority).sum())
    ir = (len(y) - n_min) / n_min
    weights = np.ones(len(y))
    for i in np.flatnonzero(y == minority):
        d = ((x - x[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        nearest = np.lexsort((np.arange(len(y)), d))[:k]
        m = int((y[nearest] != minority).sum())
        key = "cfp" if m == 0 else "cfs" if m / k < 0.5 else "cfb" if m < k else "cfo"
        weights[i] = DEFAULT_COSTS[key] * ir
    return weights


def weighed_classes(y, minority=None):
    if minority is not None:
        return [minority]
    classes, counts = np.unique(y, return_counts=True)
    # Every class but the largest (ties: the greatest value).
    largest = max(zip(counts, classes))[1]
    return [c for c in classes if c != largest]


def unambiguous(x, y, k=5, minority=None):
    return all(not ambiguous_rows(x, y, c, k) for c in weighed_classes(y, minority))


def reference(x, y, k=5, minority=None, costs=None, method="neighbor"):
    """(weights, categories) from the package: binary via fit(), multiclass
    via one-vs-rest weights (a row takes its own class's weight; the
    largest class weighs 1.0)."""
    kw = {"n_neighbors": k, "method": method}
    if costs:
        kw.update(costs)
    classes = np.unique(y)
    if len(classes) == 2:
        if minority is not None:
            kw["minority_label"] = minority
        model = estimator(**kw).fit(x, y)
        cats = [model.complexity_category_by_index_.get(i, "") for i in range(len(y))]
        return model.sample_weight_, cats
    by_class = estimator(**kw).compute_ovr_sample_weights(x, y)
    largest = weighed_classes(y)
    weights = np.ones(len(y))
    for i, label in enumerate(y):
        if label in largest:
            weights[i] = by_class[label][i]
    return weights, [""] * len(y)


def write(name, x, y, weights, cats):
    path = os.path.join(ROOT, DATA, f"{name}.csv")
    with open(path, "w") as f:
        cols = [f"x{i}" for i in range(x.shape[1])]
        f.write(",".join(["id"] + cols + ["label", "expected_weight", "expected_category"]) + "\n")
        for i, (row, label, w, c) in enumerate(zip(x, y, weights, cats)):
            f.write(
                ",".join([str(i)] + [repr(float(v)) for v in row])
                + f",{label},{float(w)!r},{c}\n"
            )


def blobs(rng, sizes, dim, spread):
    xs, ys = [], []
    for label, n in sizes:
        centre = rng.normal(0, 1.5, size=dim)
        xs.append(rng.normal(centre, spread, size=(n, dim)))
        ys += [label] * n
    x = np.vstack(xs)
    order = rng.permutation(len(ys))
    return x[order], np.array(ys)[order]


def with_duplicates(rng):
    """Integer-valued rows, a fifth of them exact copies (same class)."""
    while True:
        x, y = blobs(rng, [(0, 240), (1, 45)], 3, 1.2)
        x = np.round(x * 4)
        copies = rng.choice(len(y), size=60)
        x = np.vstack([x, x[copies]])
        y = np.concatenate([y, y[copies]])
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
        if unambiguous(x, y):
            return x, y


def grid(rng, levels, n, unambiguous_only):
    """Rows on a coarse integer grid (many equal distances), classes by region."""
    while True:
        x = rng.integers(0, levels, size=(n, 2)).astype(float)
        p = np.where(x[:, 0] + x[:, 1] < levels * 0.6, 0.35, 0.03)
        y = (rng.random(n) < p).astype(int)
        if not unambiguous_only or unambiguous(x, y):
            return x, y


def slt_check(table, options, n, compare_category=True):
    opts = f", '{options}'" if options else ""
    features = None
    category = (
        "count(*) FILTER (WHERE coalesce(complexity, '') = coalesce(expected_category, ''))"
        if compare_category
        else "count(complexity IS NULL OR complexity IS NOT NULL)"
    )
    return (
        f"query III\nSELECT count(*) AS all_rows, count(*) FILTER (WHERE sample_weight = "
        f"expected_weight) AS same_weight, {category} AS same_category FROM icost('{table}', 'label'{opts})\n----\n{n} {n} {n}\n\n"
    )


def neighbour_disagreement(x, y, k):
    """Other-class neighbours among the k nearest (self dropped), per row."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    out = np.zeros(len(y), dtype=int)
    for i, row in enumerate(idx):
        nb = [j for j in row if j != i][:k]
        out[i] = int((y[nb] != y[i]).sum())
    return out


def sql_value(v):
    return f"'{v}'" if isinstance(v, str) else str(v)


def complexity_checks(table, x, y):
    for c in np.unique(y):
        assert not ambiguous_rows(x, y, c, 5) and not ambiguous_rows(x, y, c, 1), table
    m5 = neighbour_disagreement(x, y, 5)
    m1 = neighbour_disagreement(x, y, 1)
    classes, counts = np.unique(y, return_counts=True)
    minority = classes[np.argmin(counts)]
    feats = ", ".join(f"x{i}" for i in range(x.shape[1]))
    close = lambda expr, v: f"abs({expr} - {float(v)!r}) < 1e-12"
    checks = [
        close(f"kdn_mean(label, {feats})", (m5[y == minority] / 5).mean()),
        close(f"n3(label, {feats})", (m1 > 0).mean()),
    ]
    for c in classes:
        checks.append(close(f"kdn_mean_of(label, {sql_value(c)}, {feats})", (m5[y == c] / 5).mean()))
        checks.append(close(f"n3_of(label, {sql_value(c)}, {feats})", (m1[y == c] > 0).mean()))
    text = (
        f"statement ok\nCREATE EXTERNAL TABLE {table} STORED AS CSV LOCATION "
        f"'{DATA}/{table}.csv' OPTIONS ('format.has_header' 'true');\n\n"
    )
    text += "".join(
        f"query B\nSELECT {check} FROM {table}\n----\ntrue\n\n" for check in checks
    )
    # complexity_report: sizes, IR, C2 and the typology shares per class.
    n = len(y)
    ir_l = (len(classes) - 1) / len(classes) * sum(cnt / (n - cnt) for cnt in counts)
    c2 = 1 - 1 / ir_l
    for c, cnt in zip(classes, counts):
        mc = m5[y == c]
        shares = [(mc <= 1).mean(), ((mc >= 2) & (mc <= 3)).mean(), (mc == 4).mean(), (mc == 5).mean()]
        conds = [
            f"rows = {cnt}",
            close("imbalance_ratio", counts.max() / cnt),
            close("c2", c2),
            close("kdn_mean", (mc / 5).mean()),
            close("n3", (m1[y == c] > 0).mean()),
        ] + [close(col, v) for col, v in zip(["safe", "borderline", "rare", "outlier"], shares)]
        text += (
            f"query B\nSELECT {' AND '.join(conds)} FROM complexity_report('{table}', 'label', "
            f"'features={feats.replace(', ', ' ')}') WHERE class = '{c}'\n----\ntrue\n\n"
        )
    return text


def main():
    rng = np.random.default_rng(20261126)
    out = [
        f"# Generated by scripts/reference-icost (icost {icost.__version__}, scikit-learn "
        f"{sklearn.__version__}); do not edit.\n"
        "# sample_weight and complexity of every row equal icost's iCost(method='neighbor')\n"
        "# (compute_sample_weight / one-vs-rest weights) on the same feature columns.\n\n"
    ]
    features = lambda d: "features=" + " ".join(f"x{i}" for i in range(d))
    tables = []

    x, y = blobs(rng, [(0, 340), (1, 60)], 4, 1.0)
    assert unambiguous(x, y)
    tables.append(("gaussian_overlap", x, y, [("", {}), ("k=7", {"k": 7}),
        ("pure=0.2, safe=0.6, border=1.1, outlier=0.05",
         {"costs": {"cfp": 0.2, "cfs": 0.6, "cfb": 1.1, "cfo": 0.05}}),
        ("method=cs", {"method": "cs"})]))

    x, y = with_duplicates(rng)
    tables.append(("duplicates", x, y, [("", {})]))

    x, y = grid(rng, 12, 260, unambiguous_only=True)
    tables.append(("grid_ties", x, y, [("", {})]))

    x, y = blobs(rng, [(0, 300), (1, 110), (2, 50)], 3, 1.1)
    assert unambiguous(x, y)
    tables.append(("three_classes", x, y, [("", {})]))

    x, y = blobs(rng, [(0, 450), (1, 50)], 20, 2.5)
    assert unambiguous(x, y)
    tables.append(("twenty_features", x, y, [("", {})]))

    x, y = blobs(rng, [("fault", 90), ("ok", 150)], 2, 1.3)
    assert unambiguous(x, y, minority="ok")
    tables.append(("named_minority", x, y, [("minority=ok", {"minority": "ok"})]))

    for name, x, y, runs in tables:
        for i, (options, kw) in enumerate(runs):
            k = kw.get("k", 5)
            assert unambiguous(x, y, k=k, minority=kw.get("minority")), (name, options)
            weights, cats = reference(
                x, y, k=k, minority=kw.get("minority"), costs=kw.get("costs"),
                method=kw.get("method", "neighbor"),
            )
            table = name if i == 0 else f"{name}_{i}"
            write(table, x, y, weights, cats)
            out.append(
                f"statement ok\nCREATE EXTERNAL TABLE {table} STORED AS CSV LOCATION "
                f"'{DATA}/{table}.csv' OPTIONS ('format.has_header' 'true');\n\n"
            )
            opts = ", ".join(o for o in [features(x.shape[1]), options] if o)
            multiclass = len(np.unique(y)) > 2
            out.append(slt_check(table, opts, len(y), compare_category=not multiclass))
            print(f"{table}: {len(y)} rows, {len(np.unique(y))} classes, options '{opts}'")

    # How often traversal-order ties matter, for docs/icost.md.
    x, y = grid(rng, 6, 400, unambiguous_only=False)
    weights, _ = reference(x, y)
    minority = weighed_classes(y)[0]
    amb = ambiguous_rows(x, y, minority, 5)
    ours = lower_index_rule(x, y, minority)
    differ = int((np.abs(ours - weights) > 0).sum())
    print(f"grid with mixed ties: {(y == minority).sum()} minority rows, {len(amb)} with a "
          f"class-mixed tie at the 5th distance, {differ} weighed differently by the "
          f"lower-index rule")

    with open(os.path.join(ROOT, "tests/slt/icost_reference.slt"), "w") as f:
        f.write("".join(out))

    complexity = [
        f"# Generated by scripts/reference-icost (scikit-learn {sklearn.__version__}); do not edit.\n"
        "# kDN, N3 and the typology from scikit-learn's NearestNeighbors (k + 1 neighbours, self\n"
        "# dropped) on tables without ties, within 1e-12.\n\n"
    ]
    for name, x, y, _ in tables:
        if name in ("duplicates", "grid_ties"):
            continue
        complexity.append(complexity_checks(name, x, y))
    with open(os.path.join(ROOT, "tests/slt/complexity_reference.slt"), "w") as f:
        f.write("".join(complexity))


if __name__ == "__main__":
    main()
