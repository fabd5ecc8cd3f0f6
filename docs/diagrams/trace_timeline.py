#!/usr/bin/env python3
"""Renders one training step of ACCEL_TRACE files as a timeline PNG (docs/tracing.md).

  python3 docs/diagrams/trace_timeline.py TRACE_DIR docs/diagrams/trace_timeline.png

Reads every TRACE_DIR/trace_rank*.json, takes the quickest step (from a "forward" of rank 0
to the end of the same step's "optimizer.step" on the last rank to finish it; the quickest is
the one least disturbed by other processes on the machine) and draws, per rank, each track as
rows: the compute track one row per nesting depth (step spans, then backward nodes and
layers, then kernels), then the data loader, communication and ddp tracks. It is a picture
for the docs, not a viewer: open the JSON files themselves in ui.perfetto.dev.
"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COLORS = {"step": "#4c72b0", "model": "#8172b3", "autograd": "#dd8452", "compute": "#55a868",
          "data": "#937860", "communication": "#c44e52", "ddp": "#da8bc3"}
MAX_COMPUTE_DEPTH = 4  # deeper kernel calls (kernels inside kernels) share the last row


def load(path):
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    order = {e["tid"]: e["args"]["sort_index"] for e in events if e["ph"] == "M" and e["name"] == "thread_sort_index"}
    spans = [e for e in events if e["ph"] == "X"]
    return names, order, spans


def with_depths(spans):
    """(span, depth) pairs: depth is how many spans of the same track enclose it."""
    result, open_ends = [], {}
    for span in sorted(spans, key=lambda s: (s["ts"], -s["dur"])):
        ends = open_ends.setdefault(span["tid"], [])
        while ends and ends[-1] <= span["ts"]:
            ends.pop()
        result.append((span, len(ends)))
        ends.append(span["ts"] + span["dur"])
    return result


def main(trace_dir, output, title="ACCEL_TRACE: one DDP step of a tiny BERT, 2 ranks"):
    ranks = sorted(glob.glob(os.path.join(trace_dir, "trace_rank*.json")),
                   key=lambda p: int(p.rsplit("rank", 1)[1].split(".")[0]))
    loaded = [load(p) for p in ranks]
    forwards = sorted(s["ts"] for s in loaded[0][2] if s["name"] == "forward")
    step_ends = [sorted(s["ts"] + s["dur"] for s in spans if s["name"] == "optimizer.step") for _, _, spans in loaded]
    windows = [(forwards[k], max(ends[k] for ends in step_ends)) for k in range(len(forwards))]
    begin, end = min(windows, key=lambda w: w[1] - w[0])
    begin -= 0.01 * (end - begin)

    rows = []  # (label, [(start_ms, duration_ms, name, category)])
    for rank, (names, order, spans) in enumerate(loaded):
        visible = [s for s in spans if s["ts"] + s["dur"] >= begin and s["ts"] <= end]
        by_track = {}
        for span, depth in with_depths(visible):
            track = names[span["tid"]]
            key = (order[span["tid"]], track, min(depth, MAX_COMPUTE_DEPTH) if track == "compute" else 0)
            by_track.setdefault(key, []).append(span)
        for (_, track, depth), track_spans in sorted(by_track.items()):
            label = f"rank {rank}  {track}" + (f" [{depth}]" if track == "compute" else "")
            rows.append((label, [((s["ts"] - begin) / 1e3, s["dur"] / 1e3, s["name"], s["cat"]) for s in track_spans]))

    width_ms = (end - begin) / 1e3
    fig, ax = plt.subplots(figsize=(14, 0.32 * len(rows) + 1.2), dpi=80)
    for row, (label, spans) in enumerate(rows):
        y = len(rows) - 1 - row
        for start, duration, name, category in spans:
            ax.broken_barh([(start, max(duration, width_ms / 2000))], (y - 0.4, 0.8),
                           facecolors=COLORS.get(category, "#999999"), edgecolor="white", linewidth=0.3)
            if duration > width_ms / 25:
                ax.text(start + duration / 2, y, name, ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)], fontsize=8)
    ax.set_xlim(0, width_ms)
    ax.set_xlabel("ms since the step began")
    ax.set_title(title, fontsize=10,
                 loc="left")
    handles = [Patch(color=c, label=k) for k, c in COLORS.items()]
    ax.legend(handles=handles, fontsize=8, ncol=len(COLORS), loc="lower right", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    fig.tight_layout()
    fig.savefig(output)
    print(f"{output}: {len(rows)} rows, {width_ms:.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
