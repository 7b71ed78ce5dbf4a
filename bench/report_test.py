#!/usr/bin/env python3
"""Tests of make bench's report (bench/report/) on a made-up run: the
ratios to the floor and their goals, the latency curve, and that the whole
report and its chart are written. Standard library only:

    python3 bench/report_test.py
"""

import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import chart, curve, document, floor, terminal  # noqa: E402
from report.data import Run  # noqa: E402

# CPU µs/req per server and workload, the same in every repetition but
# the first, where forkring-uring's keep-alive costs more.
CPU = {
    "forkring-uring": {"keepalive": 8.0, "pipelined": 0.8, "close": 30.0},
    "forkring-epoll": {"keepalive": 9.0, "pipelined": 0.9, "close": 32.0},
    "nginx": {"keepalive": 11.0, "pipelined": 11.0, "close": 41.0},
    "may_minihttp": {"keepalive": 8.2, "pipelined": 0.7, "close": 50.0},
    "floor-uring": {"keepalive": 7.0, "pipelined": 0.5, "close": 28.0},
    "floor-epoll": {"keepalive": 7.5, "pipelined": 0.6, "close": 31.0},
}
CURVE_SHARES = [10, 50, 90]
CURVE_RATES = [10000, 40000]


def write_run(d):
    with open(os.path.join(d, "results.tsv"), "w") as f:
        for rep in (1, 2, 3):
            for s, by in CPU.items():
                for wl, cpu in by.items():
                    if rep == 1 and s == "forkring-uring" and wl == "keepalive":
                        cpu = 9.0
                    rps = 1e6 / cpu
                    row = [1, wl, s, rep, rps, 50, 90, 120, cpu, 4096, 0, rps * 4, 2]
                    f.write("\t".join(map(str, row)) + "\n")
    with open(os.path.join(d, "curve.tsv"), "w") as f:
        for s, by in CPU.items():
            cap = 1e6 / by["keepalive"]
            points = [(int(cap * p / 100), p) for p in CURVE_SHARES] + [(r, "abs") for r in CURVE_RATES]
            for rate, share in points:
                # The last share is not held.
                achieved = rate * (0.8 if share == 90 else 1.0)
                row = [1, s, 1, rate, achieved, 40, 60, 200, 400, 900, 30, 80, 5, 20, 0, 9.0, 4096, 2, share]
                f.write("\t".join(map(str, row)) + "\n")
    meta = {
        "date": "2026-01-01 00:00 UTC", "reps": "3", "workloads": "keepalive pipelined close", "worker_counts": "1",
        "duration": "4s", "conns": "64", "where_1": "pinned", "wrk_threads_1": "1", "rate_threads": "2",
        "rate_conns": "4", "curve_shares": " ".join(map(str, CURVE_SHARES)),
        "curve_rates": " ".join(map(str, CURVE_RATES)), "curve_max": "100000", "curve_duration": "5",
        "curve_reps": "1",
    }
    with open(os.path.join(d, "meta.tsv"), "w") as f:
        for k, v in meta.items():
            f.write(f"{k}\t{v}\n")


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        write_run(self.tmp.name)
        self.run_ = Run(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_floors_are_found_and_paired_by_backend(self):
        r = self.run_
        self.assertEqual(r.floors, ["floor-uring", "floor-epoll"])
        self.assertNotIn("floor-uring", r.peers)
        self.assertEqual(r.floor_of("forkring-uring"), "floor-uring")
        self.assertEqual(r.floor_of("forkring-epoll"), "floor-epoll")

    def test_ratios_to_the_floor_have_their_range(self):
        rows = {(wl, s): c for _, wl, s, c in floor.table_rows(self.run_)}
        # 9/7 in the first repetition, 8/7 in the others.
        self.assertEqual(rows[("keepalive", "forkring-uring")][2], "1.14 [1.14–1.29]")

    def test_goals_are_judged_on_the_median_ratio(self):
        r = self.run_
        self.assertEqual(floor.goal_cells(r, 1, "keepalive", "forkring-uring"), ["≤ 1.15× the floor: 1.14 [1.14–1.29] met"])
        # 9 / 7.5 = 1.2.
        self.assertIn("missed", floor.goal_cells(r, 1, "keepalive", "forkring-epoll")[0])
        # 0.8 / 0.5 = 1.6 above the floor's goal; 0.8 / 0.7 not below may_minihttp.
        goals = floor.goal_cells(r, 1, "pipelined", "forkring-uring")
        self.assertEqual(len(goals), 2)
        self.assertTrue(all(g.endswith("missed") for g in goals))
        # io_uring against its floor (30 / 28), epoll against nginx (32 / 41).
        self.assertTrue(floor.goal_cells(r, 1, "close", "forkring-uring")[0].startswith("≤ 1.1× the floor: 1.07"))
        self.assertTrue(floor.goal_cells(r, 1, "close", "forkring-epoll")[0].startswith("≤ 0.8× nginx: 0.78"))

    def test_curve_points_by_rate_with_their_kind(self):
        pts = self.run_.curve_points("floor-uring")
        self.assertEqual([p["rate"] for p in pts], sorted(p["rate"] for p in pts))
        self.assertEqual(sum(1 for p in pts if p["kind"] == "abs"), len(CURVE_RATES))
        self.assertEqual(sorted(p["share"] for p in pts if p["kind"] == "share"), CURVE_SHARES)
        held = {p["share"]: curve.held(p) for p in pts if p["kind"] == "share"}
        self.assertEqual(held, {10: True, 50: True, 90: False})

    def test_the_report_and_its_chart_are_written(self):
        r = self.run_
        md = document.markdown(r, "report.svg")
        for part in ("## Against the floor", "## Latency curve", "Goals, 1 worker each", "(not held)"):
            self.assertIn(part, md)
        svg = ET.fromstring(chart.svg(r))
        ns = "{http://www.w3.org/2000/svg}"
        self.assertTrue(svg.findall(f"{ns}polyline"), "the curve's lines")
        texts = [t.text for t in svg.iter(f"{ns}text")]
        self.assertTrue(any(t and t.startswith("CPU per request") for t in texts))
        self.assertIn("latency curve", terminal.tables(r))


if __name__ == "__main__":
    unittest.main()
