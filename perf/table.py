"""Turns perf/compare.sh's results.jsonl into a Markdown report: the median
of every run of each (scenario, server) cell, and its ratio to
tokio-tungstenite's median, checked against the targets of the benchmark
plan. Usage: python3 perf/table.py results.jsonl > table.md"""

import json
import statistics
import sys
from collections import defaultdict

BASELINE = "tokio-tungstenite"
ORDER = ["wschat", "uws", "tokio-tungstenite", "node-ws", "node-websocket", "floor"]

# scenario -> (title, [(field, header, format, better)], [(field, comparator, target, against)])
# `against` is a server in the same scenario, a (scenario, server) cell of
# another scenario (wschat's own plain run), or None for an absolute target.
SCENARIOS = {
    "S1": ("S1 latency: 100 clients, 10 senders, 1,000 msg/s, 64 B",
           [("p50_us", "p50 µs", "{:.0f}", "low"), ("p99_us", "p99 µs", "{:.0f}", "low"),
            ("max_us", "max µs", "{:.0f}", "low"), ("lost", "lost", "{:.0f}", "low")],
           [("p99_us", "<=", 0.6, BASELINE)]),
    "S2W": ("S2W saturation: 100 clients, 10 senders, closed loop ≤16 per sender, 64 B",
            [("deliveries_per_sec", "deliveries/s", "{:,.0f}", "high"),
             ("server_cpu_s_per_million", "server CPU-s per million", "{:.3f}", "low"),
             ("lost", "lost", "{:.0f}", "low")],
            [("deliveries_per_sec", ">=", 1.5, BASELINE), ("deliveries_per_sec", ">=", 15, "node-ws"),
             ("server_cpu_s_per_million", "abs<=", 0.25, None)]),
    "S3": ("S3 fan-out: 1,000 clients, 2 senders, 200 msg/s, 64 B",
           [("deliveries_per_sec", "deliveries/s", "{:,.0f}", "high"), ("lost", "lost", "{:.0f}", "low"),
            ("p50_us", "p50 µs", "{:.0f}", "low"), ("p99_us", "p99 µs", "{:.0f}", "low")],
           [("p99_us", "<=", 0.25, BASELINE), ("lost", "abs<=", 0, None)]),
    "S4-2k": ("S4 idle: 2,000 connections, joins announced to all",
              [("rss_kib_per_conn", "RSS KiB per connection", "{:.2f}", "low"),
               ("handshakes_per_sec", "handshakes/s", "{:,.0f}", "high")],
              [("rss_kib_per_conn", "abs<=", 0.5, None), ("handshakes_per_sec", ">=", 2, BASELINE)]),
    "S4-10k": ("S4 idle: 10,000 connections, joins announced to all",
               [("rss_kib_per_conn", "RSS KiB per connection", "{:.2f}", "low"),
                ("handshakes_per_sec", "handshakes/s", "{:,.0f}", "high")],
               [("rss_kib_per_conn", "abs<=", 0.5, None), ("handshakes_per_sec", ">=", 2, BASELINE)]),
    "S5": ("S5 large: 20 clients, 2 senders, closed loop ≤4 per sender, 64 KiB",
           [("mb_per_sec", "delivered MB/s", "{:,.1f}", "high"), ("lost", "lost", "{:.0f}", "low")],
           [("mb_per_sec", ">=", 1.6, BASELINE)]),
    "S5-open": ("S5 open loop: 20 clients, 2 senders, as fast as they can, 64 KiB",
                [("mb_per_sec", "delivered MB/s", "{:,.1f}", "high"), ("lost", "lost", "{:.0f}", "low"),
                 ("closed_by_server", "receivers closed", "{:.0f}", "low"),
                 ("closed_1008", "of them 1008", "{:.0f}", "low"),
                 ("server_rss_mib_peak", "server peak RSS MiB", "{:,.1f}", "low")],
                []),
    "S2W-TLS": ("S2W over TLS: 100 clients, 10 senders, closed loop ≤16 per sender, 64 B, wss",
                [("deliveries_per_sec", "deliveries/s", "{:,.0f}", "high"),
                 ("server_cpu_s_per_million", "server CPU-s per million", "{:.3f}", "low"),
                 ("wire_bytes_per_delivery", "wire B per delivery", "{:.1f}", "low"),
                 ("lost", "lost", "{:.0f}", "low")],
                [("deliveries_per_sec", ">=", 2, "uws"), ("deliveries_per_sec", ">=", 0.5, ("S2W", "wschat"))]),
    "S5-TLS": ("S5 over TLS: 20 clients, 2 senders, closed loop ≤4 per sender, 64 KiB, wss",
               [("mb_per_sec", "delivered MB/s", "{:,.1f}", "high"),
                ("server_cpu_s", "server CPU-s", "{:.3f}", "low"),
                ("lost", "lost", "{:.0f}", "low")],
               [("mb_per_sec", ">=", 1, "uws")]),
    "C1": ("C1 compression: 100 clients, 10 senders, closed loop ≤16 per sender, 1 KiB chat text, "
           "permessage-deflate on every client",
           [("deliveries_per_sec", "deliveries/s", "{:,.0f}", "high"),
            ("wire_bytes_per_delivery", "wire B per delivery", "{:.1f}", "low"),
            ("server_cpu_s_per_million", "server CPU-s per million", "{:.3f}", "low"),
            ("lost", "lost", "{:.0f}", "low")],
           [("deliveries_per_sec", ">=", 3, "uws"), ("deliveries_per_sec", ">=", 0.5, ("C1-plain", "wschat")),
            ("wire_bytes_per_delivery", "<=", 1, "uws")]),
    "C1-plain": ("C1 without compression (the baseline): as C1, no permessage-deflate",
                 [("deliveries_per_sec", "deliveries/s", "{:,.0f}", "high"),
                  ("wire_bytes_per_delivery", "wire B per delivery", "{:.1f}", "low"),
                  ("server_cpu_s_per_million", "server CPU-s per million", "{:.3f}", "low"),
                  ("lost", "lost", "{:.0f}", "low")],
                 []),
}

# Fields computed from a result row: name -> function of the row (None when
# the row lacks what it needs; older results lack the newer fields).
DERIVED = {
    "server_rss_mib_peak": lambda r: r["server_rss_kib_peak"] / 1024
    if r.get("server_rss_kib_peak") is not None else None,
}


def field(row, name):
    return DERIVED[name](row) if name in DERIVED else row.get(name)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(path):
    cells = defaultdict(list)
    for line in open(path):
        if line.strip():
            row = json.loads(line)
            cells[(row["scenario"], row["server"])].append(row)
    print("Medians of each cell's runs (runs per cell in brackets); ratios are to tokio-tungstenite's median.\n")

    def cell_median(scenario, server, f):
        rows = cells.get((scenario, server))
        return median([field(r, f) for r in rows]) if rows else None

    for scenario, (title, fields, targets) in SCENARIOS.items():
        servers = [s for s in ORDER if (scenario, s) in cells]
        if not servers:
            continue
        med = {s: {f: median([field(r, f) for r in cells[(scenario, s)]]) for f, *_ in fields}
               for s in servers}
        print(f"### {title}\n")
        header = ["server (runs)"] + [h for _, h, _, _ in fields] + [f"{h} vs tokio" for f, h, _, _ in fields[:1]]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for s in servers:
            row = [f"{s} ({len(cells[(scenario, s)])})"]
            for f, _, fmt, _ in fields:
                v = med[s][f]
                row.append("n/a" if v is None else fmt.format(v))
            f0 = fields[0][0]
            base = med.get(BASELINE, {}).get(f0)
            v = med[s][f0]
            row.append(f"{v / base:.2f}×" if v is not None and base else "n/a")
            print("| " + " | ".join(row) + " |")
        if "wschat" in med and targets:
            checks = []
            for f, op, target, against in targets:
                v = med["wschat"].get(f)
                if v is None:
                    checks.append(f"{f}: no data")
                    continue
                if op.startswith("abs"):
                    ok = v <= target
                    checks.append(f"{f} = {v:.3g} (target ≤ {target}): {'met' if ok else 'NOT met'}")
                    continue
                if isinstance(against, tuple):
                    base = cell_median(*against, f)
                    against = f"{against[1]} {against[0]}"
                else:
                    base = med.get(against, {}).get(f)
                if not base:
                    checks.append(f"{f} vs {against}: no data")
                    continue
                ratio = v / base
                ok = ratio <= target if op == "<=" else ratio >= target
                checks.append(f"{f} {ratio:.2f}× {against} (target {op} {target}×): {'met' if ok else 'NOT met'}")
            print("\nwschat: " + "; ".join(checks))
        print()


if __name__ == "__main__":
    main(sys.argv[1])
