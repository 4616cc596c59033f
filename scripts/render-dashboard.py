#!/usr/bin/env python3
"""Renders every panel of the shipped Grafana dashboard from a live Prometheus into one
PNG, by evaluating each panel's queries over a time range through Prometheus's HTTP
API (as Grafana would) and plotting them. Needs matplotlib.

    scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10 \
        --out docs/images/dashboard.png
"""
import argparse
import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    out = fmt or "{{__name__}}"
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--sweep", default=".*")
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--out", default="dashboard.png")
    a = ap.parse_args()
    dash = json.loads((ROOT / "deploy/grafana/dashboards/ridgeline.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    end = time.time()
    start = end - a.minutes * 60
    step = max(1, int(a.minutes * 60 / 300))
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5, rows * 3.2))
    for ax, p in zip(axes.flat, panels):
        for t in p["targets"]:
            expr = (
                t["expr"]
                .replace("$sweep", a.sweep)
                .replace("$instance", ".*")
                .replace("$__rate_interval", a.rate_interval)
            )
            for s in query_range(a.prometheus, expr, start, end, step):
                xs = [(float(v[0]) - end) / 60 for v in s["values"]]
                ys = [float(v[1]) for v in s["values"]]
                ax.plot(xs, ys, label=legend(t.get("legendFormat"), s["metric"])[:40])
        ax.set_title(p["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("minutes", fontsize=7)
        unit = p["fieldConfig"]["defaults"].get("unit", "")
        if unit and unit != "short":
            ax.set_ylabel(unit, fontsize=7)
        if ax.lines and len(ax.lines) <= 8:
            ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{dash['title']} dashboard, rendered from Prometheus at {a.prometheus}")
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}: {len(panels)} panels")


if __name__ == "__main__":
    main()
