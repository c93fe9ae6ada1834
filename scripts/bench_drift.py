#!/usr/bin/env python3
"""Write the drift benchmark streams to target/bench-drift/ and time River
0.26.1's detectors on them: a binary error stream (1,000,000 rows, error rate
changing 0.05 -> 0.15 -> 0.05 -> 0.30 -> 0.10 every 200,000 rows) for ADWIN,
DDM, EDDM, HDDM_A, HDDM_W and KSWIN (its first 100,000 rows only: River's
KSWIN runs a SciPy test per update), and a Gaussian value stream (1,000,000
rows, mean shifting by one standard deviation every 200,000 rows) for
Page-Hinkley and ADWIN. One line per detector and stream:
reference<TAB>detector<TAB>stream<TAB>updates per second (median of
REFERENCE_RUNS)<TAB>rows flagged as drift."""

import os
import time

import numpy as np
from river import drift
from river.drift import binary

RUNS = int(os.environ.get("REFERENCE_RUNS", "3"))
ROWS = 1_000_000
KSWIN_ROWS = 100_000
root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "target", "bench-drift")
os.makedirs(root, exist_ok=True)

rng = np.random.default_rng(7)
segment = ROWS // 5
rates = [0.05, 0.15, 0.05, 0.30, 0.10]
errors = np.concatenate([(rng.random(segment) < r).astype(np.float64) for r in rates])
means = [0.0, 1.0, 0.0, -1.0, 0.0]
values = np.concatenate([rng.normal(m, 1.0, segment) for m in means])
errors.astype("<f8").tofile(os.path.join(root, "binary.f64"))
values.astype("<f8").tofile(os.path.join(root, "values.f64"))

detectors = [
    ("adwin", "binary", drift.ADWIN),
    ("ddm", "binary", binary.DDM),
    ("eddm", "binary", binary.EDDM),
    ("hddm_a", "binary", binary.HDDMA),
    ("hddm_w", "binary", binary.HDDMW),
    ("kswin", "binary", lambda: drift.KSWIN(seed=42)),
    ("page_hinkley", "values", drift.PageHinkley),
    ("adwin", "values", drift.ADWIN),
]
for name, stream, make in detectors:
    xs = (errors if stream == "binary" else values).tolist()
    if name == "kswin":
        xs = xs[:KSWIN_ROWS]
    times, flagged = [], 0
    for _ in range(RUNS):
        detector = make()
        update = detector.update
        count = 0
        started = time.perf_counter()
        for x in xs:
            update(x)
            if detector.drift_detected:
                count += 1
        times.append(time.perf_counter() - started)
        flagged = count
    seconds = sorted(times)[RUNS // 2]
    print(f"reference\t{name}\t{stream}\t{len(xs) / seconds:.0f}\t{flagged}", flush=True)

# The SQL path: each detector as a window function through `equipoise sql`
# over the same values in a Parquet file, timed by the window operator's
# `elapsed_compute` in `EXPLAIN ANALYZE` (the scan and the sort before it
# excluded). One line per detector, stream and path: sql (a bounded
# Parquet file) or sql_stream (a stream table)<TAB>detector<TAB>stream<TAB>
# updates per second (median of REFERENCE_RUNS)<TAB>rows flagged as drift.
import re
import subprocess

BIN = os.path.join(os.path.dirname(root), "release", "equipoise")
UNITS = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
if not os.path.exists(BIN):
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
tables = {}
for stream, xs in (("binary", errors), ("values", values)):
    csv_path = os.path.join(root, f"{stream}.csv")
    with open(csv_path, "w") as f:
        f.write("t,x\n")
        f.writelines(f"{t},{x!r}\n" for t, x in enumerate(xs.tolist()))
    parquet = os.path.join(root, f"{stream}.parquet")
    subprocess.run([BIN, "sql", "--table", f"s={csv_path}",
                    f"COPY (SELECT * FROM s) TO '{parquet}' STORED AS PARQUET"],
                   check=True, capture_output=True)
    tables[stream] = parquet


def window_seconds(command, sql, operator):
    """Median over RUNS of `operator`'s `elapsed_compute` in an
    `EXPLAIN ANALYZE` of `sql` (which may start with DDL statements)."""
    times = []
    for _ in range(RUNS):
        explained = subprocess.run(command + [sql], check=True, capture_output=True,
                                   text=True).stdout
        found = re.search(operator + r"\b[^\n]*?elapsed_compute=([0-9.]+)(ns|µs|ms|s)\b",
                          explained)
        if not found:
            raise SystemExit(f"no {operator} time in:\n{explained}")
        times.append(float(found.group(1)) * UNITS[found.group(2)])
    return sorted(times)[RUNS // 2]


for name, stream, _ in detectors:
    arg = "CAST(x AS INT)" if stream == "binary" else "x"
    rows = KSWIN_ROWS if name == "kswin" else ROWS
    where = f" WHERE t < {KSWIN_ROWS}" if name == "kswin" else ""
    # Bounded: over this input the operator is `WindowAggExec`, whose time
    # includes gathering the partition.
    query = (f"SELECT count(*) FILTER (WHERE d = 'drift') FROM "
             f"(SELECT {name}({arg}) OVER (ORDER BY t) AS d FROM s{where})")
    command = [BIN, "sql", "--table", f"s={tables[stream]}", "--format", "csv"]
    flagged = subprocess.run(command + [query], check=True, capture_output=True,
                             text=True).stdout.split()[-1]
    seconds = window_seconds(command, f"EXPLAIN ANALYZE {query}", "(?:Bounded)?WindowAggExec")
    print(f"sql\t{name}\t{stream}\t{rows / seconds:.0f}\t{flagged}", flush=True)
    # A stream table over the CSV file, declared ordered by t: DataFusion's
    # bounded window execution calls the detector once per row.
    ddl = (f"CREATE UNBOUNDED EXTERNAL TABLE s (t BIGINT, x DOUBLE) STORED AS CSV "
           f"WITH ORDER (t ASC) LOCATION '{os.path.join(root, stream + '.csv')}' "
           "OPTIONS ('format.has_header' 'true');")
    query = (f"SELECT t FROM (SELECT t, {name}({arg}) OVER (ORDER BY t) AS d FROM s{where}) "
             "WHERE d = 'drift'")
    command = [BIN, "sql", "--format", "csv"]
    flagged = len(subprocess.run(command + [ddl + query], check=True, capture_output=True,
                                 text=True).stdout.split()) - 1
    seconds = window_seconds(command, f"{ddl}EXPLAIN ANALYZE {query}", "BoundedWindowAggExec")
    print(f"sql_stream\t{name}\t{stream}\t{rows / seconds:.0f}\t{flagged}", flush=True)

# The `drift_monitor` operator, which runs the same kind of detectors
# inside a job: the binary stream as one class predicted wrong where the
# error is 1 (its class-prior ADWIN, the class's DDM-OCI recall monitor,
# HDDM_A over the error and PerfSim per row), timed by its own
# `elapsed_compute`: monitor<TAB>drift_monitor<TAB>binary<TAB>rows per
# second<TAB>rows in drift.
command = [BIN, "sql", "--table", f"s={tables['binary']}", "--format", "csv"]
view = ("CREATE VIEW m AS SELECT t, CAST(1 AS BIGINT) AS label, "
        "CAST(1 - x AS BIGINT) AS prediction FROM s;")
query = ("SELECT count(*) FILTER (WHERE drift_state = 'drift') "
         "FROM drift_monitor('m', 'label', 'prediction', 'order_by=t')")
flagged = subprocess.run(command + [view + query], check=True, capture_output=True,
                         text=True).stdout.split()[-1]
seconds = window_seconds(command, f"{view}EXPLAIN ANALYZE {query}", "DriftMonitorExec")
print(f"monitor\tdrift_monitor\tbinary\t{ROWS / seconds:.0f}\t{flagged}", flush=True)
