#!/usr/bin/env python3
"""Tests of make bench's report (bench/report/) on a made-up run: the
ratios to the floor and their goals, the latency curve, past capacity
(overload.json: its tables, goals and charts, with goals met and missed, a
server absent and null figures), and that the whole report and its chart
are written. Standard library only:

    python3 bench/report_test.py
"""

import json
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import chart, curve, document, floor, overload, terminal  # noqa: E402
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


CAPACITY = {"pool": 400.0, "loop": 50000.0}
LOADS = [0.5, 1.0, 1.5, 2.0, 4.0]


def overload_row(server, route, load, goodput_share, p99_ms, fast_p99_ms=0.5, refused=0.0):
    """A row as forkring-stress --json writes it."""
    cap = CAPACITY[route]
    return {
        "server": server, "route": route, "load": load, "offered": cap * load, "goodput": cap * goodput_share,
        "p50_ms": p99_ms / 2, "p99_ms": p99_ms, "p999_ms": p99_ms * 2, "refused_share": refused,
        "refusal_p50_ms": 0.1 if refused else None, "refusal_p99_ms": 0.4 if refused else None,
        "errors": 0, "fast_p99_ms": fast_p99_ms, "fast_p99_max_ms": fast_p99_ms * 3,
    }


def overload_json(forkring_good=True):
    """forkring (holding, or collapsing past 1x where `forkring_good` is
    false), forkring without admission (latency grows) and Node (goodput
    falls) on both routes; no nginx."""
    rows = []
    for route in ("pool", "loop"):
        base = 12.0 if route == "pool" else 0.4
        for ld in LOADS:
            past = ld > 1
            if forkring_good:
                rows.append(overload_row("forkring", route, ld, min(ld, 1) * 0.97, base * (1.5 if past else 1),
                                         0.6, 1 - 1 / ld if past else 0.0))
            else:
                rows.append(overload_row("forkring", route, ld, min(ld, 1) * (0.5 if past else 0.97),
                                         base * (10 if past else 1), 5.0 if past else 0.6))
            rows.append(overload_row("forkring-admission-off", route, ld, min(ld, 1) * 0.97, base * (100 * ld if past else 1)))
            rows.append(overload_row("node", route, ld, min(ld, 1) * (0.5 if past else 0.95), base * (1.2 if past else 1)))
    return {"capacity": dict(CAPACITY), "rows": rows}


class OverloadTest(unittest.TestCase):
    """Past capacity, from a made-up overload.json beside the run."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        write_run(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def run_with(self, o, meta=None):
        with open(os.path.join(self.tmp.name, "overload.json"), "w") as f:
            f.write(o if isinstance(o, str) else json.dumps(o))
        if meta:
            with open(os.path.join(self.tmp.name, "meta.tsv"), "a") as f:
                for k, v in meta.items():
                    f.write(f"{k}\t{v}\n")
        return Run(self.tmp.name)

    def statuses(self, r):
        return {(route, text.split(":")[1].split(" at ")[0].strip()): status for route, text, status in overload.goals(r)}

    def test_goals_met(self):
        r = self.run_with(overload_json())
        st = self.statuses(r)
        self.assertEqual(
            st,
            {
                ("pool", "goodput"): "met", ("pool", "success p99"): "met", ("pool", "the fast route's p99"): "met",
                ("loop", "goodput"): "met", ("loop", "success p99"): "met", ("loop", "the fast route's p99"): "met",
            },
        )
        # 0.97 of capacity at 2x and 4x; 18 ms against 12 ms at 0.5x.
        texts = [t for _, t, _ in overload.goals(r)]
        self.assertIn("97% and 97%", texts[0])
        self.assertIn("18.00ms (1.5×) and 18.00ms (1.5×)", texts[1])
        text, status = overload.anchor_goal(r)
        self.assertEqual(status, "met")
        self.assertIn("not in this run: nginx", text)
        grew, fell, _ = overload.anchor_judgement(r, "pool", "forkring-admission-off")
        self.assertEqual((grew, fell), (True, False))
        grew, fell, _ = overload.anchor_judgement(r, "pool", "node")
        self.assertEqual((grew, fell), (False, True))

    def test_goals_missed(self):
        r = self.run_with(overload_json(forkring_good=False), {"overload_exit": "1"})
        self.assertEqual(set(self.statuses(r).values()), {"missed"})
        md = document.markdown(r, "report.svg")
        goal_lines = [x for x in md.split("## Past capacity")[1].split("The anchors past")[0].splitlines() if x.startswith("- ") and "route" in x]
        self.assertEqual(len(goal_lines), 6)
        self.assertTrue(all(x.endswith("**missed**") for x in goal_lines), goal_lines)
        # 0.5 of capacity at 2x and 4x; the fast route at 5 ms.
        self.assertIn("50% and 50%: **missed**", goal_lines[0])
        self.assertIn("5.00ms and 5.00ms: **missed**", goal_lines[2])
        self.assertIn("exited with status 1", md)
        self.assertIn("MISSED", terminal.tables(r))

    def test_tables(self):
        r = self.run_with(overload_json())
        md = document.markdown(r, "report.svg")
        sec = md.split("## Past capacity")[1].split("\n## ")[0]
        self.assertIn("### Pool-bound route (`GET /sleep?ms=10`), capacity 400 req/s", sec)
        self.assertIn("### Loop-bound route, capacity 50,000 req/s", sec)
        # forkring at 4x on the pool route: offered 1,600, goodput 388 (97%),
        # p50/p99/p99.9 9/18/36 ms, 75% refused in 100/400 µs, fast p99 0.6 ms (max 1.8).
        self.assertIn(
            "| forkring | 4× | 1,600 | 388 (97%) | 9.00ms | 18.00ms | 36.00ms | 75% | 100µs | 400µs | 0 | 600µs (1.80ms) |",
            sec,
        )
        # One row per server and load on each route.
        self.assertEqual(sum(1 for line in sec.splitlines() if line.startswith("| node |")), 2 * len(LOADS))
        # Summary lines at the top, terminal tables at the end of a run.
        self.assertIn("Past capacity (`forkring-stress --only 14`), forkring's goals:", md.split("## Past capacity")[0])
        t = terminal.tables(r)
        self.assertIn("past capacity", t)
        self.assertIn("pool-bound route (GET /sleep?ms=10): capacity 400 req/s", t)
        self.assertIn("anchor node, pool:", t)

    def test_server_absent(self):
        o = overload_json()
        o["rows"] = [x for x in o["rows"] if not (x["server"] == "forkring" and x["route"] == "loop")]
        r = self.run_with(o)
        goals = overload.goals(r)
        loop = [(t, s) for route, t, s in goals if route == "loop"]
        self.assertEqual(loop, [("loop-bound route: forkring was not measured", "no figure")])
        # No anchor at all: the anchors' line is not judged.
        o["rows"] = [x for x in o["rows"] if x["server"] == "forkring"]
        r = self.run_with(o)
        self.assertEqual(overload.anchor_goal(r)[1], "no figure")
        self.assertIn("not in this run: nginx, node", overload.anchor_goal(r)[0])
        document.markdown(r, "report.svg")
        chart.svg(r)

    def test_null_fields(self):
        o = overload_json()
        for x in o["rows"]:
            if x["server"] == "forkring" and x["route"] == "pool" and x["load"] == 4.0:
                for k in ("goodput", "p50_ms", "p99_ms", "p999_ms", "fast_p99_ms", "fast_p99_max_ms"):
                    x[k] = None
            if x["server"] == "node":
                x["p99_ms"] = None
        o["capacity"]["loop"] = None
        r = self.run_with(o)
        st = self.statuses(r)
        # 2x met, 4x without a figure: not judged met.
        self.assertEqual(st[("pool", "goodput")], "no figure")
        self.assertEqual(st[("pool", "success p99")], "no figure")
        self.assertEqual(st[("loop", "goodput")], "no figure")
        md = document.markdown(r, "report.svg")
        self.assertIn("| forkring | 4× | 1,600 | – | – | – | – | 75% | 100µs | 400µs | 0 | – |", md)
        self.assertIn("### Loop-bound route, capacity not measured", md)
        # Node's goodput still fell; its latency has no figure.
        grew, fell, _ = overload.anchor_judgement(r, "pool", "node")
        self.assertEqual((grew, fell), (None, True))
        terminal.tables(r)
        ET.fromstring(chart.svg(r))

    def test_unreadable_json_is_said(self):
        r = self.run_with("{not json")
        self.assertIsNone(r.overload)
        self.assertIn("could not be read", r.overload_error)
        self.assertIn("Not measured: overload.json could not be read", document.markdown(r, "report.svg"))

    def test_no_overload_no_section(self):
        r = Run(self.tmp.name)
        self.assertNotIn("Past capacity", document.markdown(r, "report.svg"))
        self.assertNotIn("Past capacity", chart.svg(r))

    def test_the_chart_has_the_past_capacity_panels(self):
        r = self.run_with(overload_json())
        svg = ET.fromstring(chart.svg(r))
        ns = "{http://www.w3.org/2000/svg}"
        texts = [t.text or "" for t in svg.iter(f"{ns}text")]
        for route in ("pool-bound route (GET /sleep?ms=10)", "loop-bound route"):
            self.assertIn(f"Past capacity, {route}: goodput and success p99 against offered load", texts)
        self.assertEqual(texts.count("goodput (× capacity)"), 2)
        self.assertEqual(texts.count("success p99 (log scale)"), 2)
        self.assertIn("4×", texts)
        # The curve's lines and one per server in each of the four panels.
        lines = svg.findall(f"{ns}polyline")
        self.assertGreaterEqual(len(lines), 4 * 3)


if __name__ == "__main__":
    unittest.main()
