#!/usr/bin/env python3
"""Regenerate the expected states of the drift detectors from River 0.26.1.

Writes tests/data/drift/binary_stream.csv (columns: row number t, input x, then
one state column per detector) (a 0/1 error stream whose error
rate changes at several points, with the state River's ADWIN, DDM, EDDM, HDDM_A and HDDM_W
report after each row) and tests/data/drift/value_stream.csv (a real-valued
stream whose mean shifts up and down, with Page-Hinkley's and ADWIN's states). Default
parameters throughout (listed in the algorithms reference). A state is
`drift` when the detector flags drift after the row, else `warning` when it
flags a warning, else `none`.

Run it through scripts/reference-drift, which creates the virtual
environment with the pinned version.
"""

import os

import numpy as np
import river
from river.drift import ADWIN, PageHinkley
from river.drift.binary import DDM, EDDM, HDDMA, HDDMW

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "tests", "data", "drift")


def state(detector):
    if detector.drift_detected:
        return "drift"
    if getattr(detector, "warning_detected", False):
        return "warning"
    return "none"


def main():
    rng = np.random.default_rng(20261126)
    rates = [(4000, 0.10), (3000, 0.35), (5000, 0.05), (2000, 0.50), (6000, 0.15), (4000, 0.02)]
    errors = np.concatenate([(rng.random(n) < p).astype(int) for n, p in rates])
    detectors = {
        "adwin": ADWIN(), "ddm": DDM(), "eddm": EDDM(), "hddm_a": HDDMA(), "hddm_w": HDDMW()
    }
    with open(os.path.join(DATA, "binary_stream.csv"), "w") as f:
        f.write("t,x," + ",".join(detectors) + "\n")
        for t, x in enumerate(errors):
            states = []
            for d in detectors.values():
                d.update(int(x))
                states.append(state(d))
            f.write(f"{t},{int(x)}," + ",".join(states) + "\n")
    means = [(3000, 0.0), (3000, 2.0), (4000, -1.0), (3000, 1.5), (5000, 1.5)]
    values = np.concatenate([rng.normal(m, 1.0, n) for n, m in means])
    value_detectors = {"page_hinkley": PageHinkley(), "adwin": ADWIN()}
    with open(os.path.join(DATA, "value_stream.csv"), "w") as f:
        f.write("t,x," + ",".join(value_detectors) + "\n")
        for t, x in enumerate(values):
            states = []
            for d in value_detectors.values():
                d.update(float(x))
                states.append(state(d))
            f.write(f"{t},{float(x)!r}," + ",".join(states) + "\n")
    print(f"river {river.__version__}: {len(errors)} binary rows, {len(values)} value rows")


if __name__ == "__main__":
    main()
