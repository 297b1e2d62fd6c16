"""plots.py: the pictures of docs/PERFORMANCE.md, drawn by bench.py from its own run's data.

    chaos-timeline.svg     one kill run (row 3a) per peer: every connection attempt a mark
                           by its outcome, every SIGKILL a vertical line
    restart-latency.svg    every restart-latency sample of row 2, per peer, with the floor
    rolling-restart.svg    row 6's bindonce run: workers alive and ready, and requests
                           answered per 10 ms, over the time of the reloads

Needs python3-matplotlib (Debian's; `make bench` installs it as root). Only bench.py calls
this; nothing here measures anything.

A comparison that silently drops a contender is a defect: a picture whose peers are not all
there (not installed, or their run failed) is not drawn at all; write_all says which and why,
and bench.py fails the run. The load average during each chaos run is in its panel's title.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# The same SVG for the same data: no date, no random ids (diffs of docs/ stay readable).
plt.rcParams.update({"svg.hashsalt": "bindonce", "font.size": 9, "axes.titlesize": 9,
                     "axes.spines.top": False, "axes.spines.right": False})
SVG_META = {"Date": None, "Creator": "tests/bench/plots.py"}

OK, REFUSED, FAILED = "#2ca02c", "#d62728", "#ff7f0e"
KILL = "#9a9a9a"
PEERS = ["bindonce", "naive", "supervisord", "gunicorn"]
# Row 2's keys the restart picture must have samples of (a missing one fails the picture).
RESTART_PEERS = {"2a": ["bindonce", "naive", "supervisord", "gunicorn"],
                 "2b": ["bindonce", "supervisord", "gunicorn"], "floor": ["httpd"]}


class PictureFailed(Exception):
    """A picture that would mislead (a contender missing): not drawn; the text says why."""


def why_missing(data, peer, missing):
    """Why peer has no usable run: the bench's reason, if it gave one."""
    d = data.get(peer)
    why = d["failed"] if isinstance(d, dict) and d.get("failed") else missing.get(peer, "no run recorded")
    return why if why.startswith(peer + ":") else "%s: %s" % (peer, why)


def parse_trace(path, with_start=False):
    """A `loadclient load --trace` file: attempts [(start s, end s, class)] and kills [s],
    in seconds since the start of the load; with_start: also that start (CLOCK_MONOTONIC s,
    the clock of Python's time.monotonic())."""
    attempts, kills, t0 = [], [], None
    with open(path) as f:
        for line in f:
            w = line.split()
            if w[0] == "A":
                attempts.append((int(w[1]) / 1e6, int(w[2]) / 1e6, w[3]))
            elif w[0] == "K":
                kills.append(int(w[1]) / 1e6)
            elif w[0] == "T0":
                t0 = int(w[1]) / 1e6
    return (attempts, kills, t0) if with_start else (attempts, kills)


def outcome(cls):
    return "ok" if cls == "ok" else "refused" if cls == "refused" else "failed"


def check_chaos(chaos, missing):
    """Every peer of PEERS ran, was killed at and answered: else PictureFailed, naming each."""
    bad = []
    for peer in PEERS:
        d = chaos.get(peer)
        if not d or d.get("failed") or not d.get("trace"):
            bad.append(why_missing(chaos, peer, missing))
            continue
        attempts, kills = parse_trace(d["trace"])
        if not kills or not any(a[2] == "ok" for a in attempts):
            bad.append("%s: its trace has %d kills and %d answered attempts" % (
                peer, len(kills), sum(1 for a in attempts if a[2] == "ok")))
    if bad:
        raise PictureFailed("not every contender ran: " + "; ".join(bad))


def chaos_timeline(chaos, titles, path, run, missing=None, window_s=2.0):
    """chaos: peer -> {"trace": path, "every_ms": K, "seconds": S, "load": "a -> b"}, or
    {"failed": why}. Raises PictureFailed unless all of PEERS are there."""
    check_chaos(chaos, missing or {})
    peers = PEERS
    fig, axes = plt.subplots(len(peers), 1, sharex=True, sharey=True,
                             figsize=(10, 1.55 * len(peers) + 1.1), squeeze=False)
    axes = axes[:, 0]
    for ax, peer in zip(axes, peers):
        d = chaos[peer]
        attempts, kills = parse_trace(d["trace"])
        counts = {"ok": 0, "refused": 0, "failed": 0}
        for a in attempts:
            counts[outcome(a[2])] += 1
        for k in kills:
            if k <= window_s:
                ax.axvline(k, color=KILL, lw=0.7, zorder=0)
        shown = [a for a in attempts if a[0] <= window_s]
        for name, color, marker, size in (("ok", OK, ".", 3), ("failed", FAILED, "^", 16),
                                          ("refused", REFUSED, "x", 16)):
            pts = [a for a in shown if outcome(a[2]) == name]
            if pts:
                ax.scatter([a[0] for a in pts], [max(0.01, (a[1] - a[0]) * 1e3) for a in pts],
                           s=size, marker=marker, color=color, linewidths=0.9 if name != "ok" else 0,
                           rasterized=(name == "ok"), zorder=3 if name != "ok" else 2)
        ax.set_yscale("log")
        ax.set_ylabel("ms to outcome")
        if d.get("load"):
            ax.set_title("load average %s" % d["load"], loc="right", fontsize=7.5, color="0.35")
        ax.set_title("%s: %d attempts in %g s, %d kills: %d refused, %d failed%s" % (
            titles.get(peer, peer), len(attempts), d["seconds"], len(kills), counts["refused"],
            counts["failed"], d.get("note", "")), loc="left",
            fontweight="bold" if peer == "bindonce" else None)
    axes[-1].set_xlim(0, window_s)
    axes[-1].set_xlabel("seconds since the start of the run (the first %g s shown; the counts are for the whole run)"
                        % window_s)
    handles = [Line2D([], [], ls="", marker=".", color=OK, label="ok"),
               Line2D([], [], ls="", marker="x", color=REFUSED, label="refused"),
               Line2D([], [], ls="", marker="^", color=FAILED, label="failed (reset, EOF, timeout, bad answer)"),
               Line2D([], [], color=KILL, lw=0.9, label="SIGKILL of a random worker")]
    fig.legend(handles=handles, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("SIGKILL one of 4 workers every %d ms under load: one connection attempt, one mark\n(%s)"
                 % (chaos[peers[0]]["every_ms"], run), y=0.965, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.925))
    fig.savefig(path, format="svg", metadata=SVG_META, dpi=110)
    plt.close(fig)
    return path


def restart_latency(restart, titles, path, run, missing=None):
    """restart: {"2a": {key: [µs...]}, "2b": {...}, "floor": {key: [µs...]}}. Raises
    PictureFailed unless every key of RESTART_PEERS has samples."""
    bad = ["%s %s" % (row, why_missing(restart.get(row, {}), key, missing or {}))
           for row, keys in RESTART_PEERS.items() for key in keys if not restart.get(row, {}).get(key)]
    if bad:
        raise PictureFailed("no samples of: " + "; ".join(bad))
    rows = []
    names = {"bindonce": "bindonce + httpd", "bindonce-mini": "bindonce + static miniworker",
             "bindonce-sd": "bindonce + httpd linked with libsystemd"}
    for key in ("bindonce", "bindonce-mini", "bindonce-sd", "naive", "supervisord", "gunicorn"):
        if restart.get("2a", {}).get(key):
            rows.append(("%s, 1 worker" % names.get(key, titles.get(key, key)), restart["2a"][key], key))
    for key in ("bindonce", "supervisord", "gunicorn"):
        if restart.get("2b", {}).get(key):
            rows.append(("%s, 4 workers" % names.get(key, titles.get(key, key)), restart["2b"][key], key))
    for key in ("httpd", "miniworker"):
        if restart.get("floor", {}).get(key):
            rows.append(("floor: kill, reap, exec %s, answer" % key, restart["floor"][key], "floor"))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.3))
    for i, (label, samples, key) in enumerate(reversed(rows)):
        ms = sorted(s / 1e3 for s in samples if s >= 0)
        color = OK if key.startswith("bindonce") else "#7f7f7f" if key == "floor" else "#1f77b4"
        # Spread the dots a little vertically by rank, so that equal values stay visible.
        ys = [i + ((j % 5) - 2) * 0.07 for j in range(len(ms))]
        ax.scatter(ms, ys, s=12, color=color, alpha=0.75, linewidths=0)
        med = ms[len(ms) // 2]
        ax.plot([med, med], [i - 0.3, i + 0.3], color="black", lw=1.6)
        ax.annotate("%.2f ms" % med if med < 100 else "%.0f ms" % med, (med, i + 0.32), fontsize=7.5,
                    ha="center", va="bottom")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)])
    ax.set_xscale("log")
    ax.set_xlabel("ms from SIGKILL to the first answer from the replacement (log scale)")
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.grid(axis="x", which="both", color="0.92")
    ax.set_title("Restart latency per peer: each dot a sample, the bar the median\n(%s)" % run,
                 loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata=SVG_META)
    plt.close(fig)
    return path


def rolling_restart(reload, path, run, bin_s=0.01, before_s=0.05, after_s=0.1):
    """reload: {"trace": path, "samples": [(t, alive, ready)], "reloads": [(t_start, t_end)],
    "workers": N}, the times from time.monotonic(). One column per reload, zoomed on it:
    a roll of 16 workers takes tens of ms, a dot in the seconds of the whole load."""
    attempts, _, t0 = parse_trace(reload["trace"], with_start=True)
    rolls = reload["reloads"]
    if not attempts or not rolls:
        return None
    n = reload["workers"]
    fig, axes = plt.subplots(2, len(rolls), sharey="row", figsize=(9, 4.8), squeeze=False,
                             gridspec_kw={"height_ratios": [1.1, 1]})
    total_bad = 0
    for col, (a, b) in enumerate(rolls):
        top, bottom = axes[0][col], axes[1][col]
        lo, hi = a - before_s, b + after_s
        ms = lambda t: (t - a) * 1e3  # noqa: E731
        st = [x for x in reload["samples"] if lo <= x[0] <= hi]
        for ax in (top, bottom):
            ax.axvspan(0, ms(b), color="#1f77b4", alpha=0.08, lw=0)
        # The dots are the samples: a gap between them is a gap in the sampling, not a state.
        top.step([ms(x[0]) for x in st], [x[1] for x in st], where="post", color="#8fb8de", lw=3,
                 marker="o", markersize=2, label="children of bindonce (exiting ones included)")
        top.step([ms(x[0]) for x in st], [x[2] for x in st], where="post", color=OK, lw=1.3,
                 label="slots ready (ctl status)")
        top.set_ylim(0, max([n] + [x[1] for x in reload["samples"]]) + 3)
        top.set_title("reload %d: %.0f ms" % (col + 1, (b - a) * 1e3), loc="left")
        # Requests per 10 ms bin, by the time they ended, in bins aligned on the reload's start.
        first = int((lo - a) // bin_s)
        last = int((hi - a) // bin_s)
        ok = {k: 0 for k in range(first, last + 1)}
        bad = dict(ok)
        for start, stop, cls in attempts:
            k = int((t0 + stop - a) // bin_s)
            if k in ok:
                if cls == "ok":
                    ok[k] += 1
                else:
                    bad[k] += 1
        total_bad += sum(bad.values())
        ks = sorted(ok)
        bottom.bar([k * bin_s * 1e3 for k in ks], [ok[k] for k in ks], width=bin_s * 1e3 * 0.9, align="edge",
                   color=OK, label="answered")
        bottom.bar([k * bin_s * 1e3 for k in ks], [bad[k] for k in ks], bottom=[ok[k] for k in ks],
                   width=bin_s * 1e3 * 0.9, align="edge", color=REFUSED, label="failed")
        bottom.set_xlabel("ms since `ctl reload` was sent")
        for ax in (top, bottom):
            ax.set_xlim(ms(lo), ms(hi))
    axes[0][0].set_ylabel("workers")
    axes[1][0].set_ylabel("requests per 10 ms")
    handles = axes[0][-1].get_legend_handles_labels()[0] + axes[1][-1].get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="lower center", frameon=False, fontsize=8, ncol=4)
    ok_all = sum(1 for x in attempts if x[2] == "ok")
    fig.suptitle("Rolling restart of %d workers under load (8 connections in flight), shaded while "
                 "`bindonce ctl reload` runs\nthe whole load: %d requests, %d ok, %d failed (%s)" % (
                     n, len(attempts), ok_all, len(attempts) - ok_all, run), fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, format="svg", metadata=SVG_META)
    plt.close(fig)
    return path


def main():
    """Draw again from a kept scratch directory: plots.py SCRATCH/plots.json OUT_DIR. OUT_DIR
    is docs/ only for the run that wrote docs/PERFORMANCE.md (its title stamp says which)."""
    import json
    import sys
    if len(sys.argv) != 3:
        sys.exit("usage: plots.py SCRATCH/plots.json OUT_DIR  (bench.py --keep leaves SCRATCH)")
    with open(sys.argv[1]) as f:
        saved = json.load(f)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    written, failed = write_all(saved["plots"], saved["titles"], out, saved["run"])
    for name, what in written:
        print("%s (%s)" % (os.path.join(out, name), what))
    for name, why in failed:
        print("NOT DRAWN: %s: %s" % (name, why), file=sys.stderr)
    sys.exit(1 if failed else 0)


def write_all(plots, titles, out_dir, run):
    """The SVGs for what this run measured. Returns ([(file name, what it shows)],
    [(file name, why it was not drawn)]); a picture not drawn leaves its old file alone."""
    written, failed = [], []
    missing = plots.get("missing", {})
    jobs = []
    if plots.get("chaos"):
        jobs.append(("chaos-timeline.svg", "row 3a, one run per peer",
                     lambda p: chaos_timeline(plots["chaos"], titles, p, run, missing)))
    if plots.get("restart"):
        jobs.append(("restart-latency.svg", "row 2, every sample",
                     lambda p: restart_latency(plots["restart"], titles, p, run, missing)))
    if plots.get("reload"):
        jobs.append(("rolling-restart.svg", "row 6, bindonce", lambda p: rolling_restart(plots["reload"], p, run)))
    for name, what, draw in jobs:
        try:
            if draw(os.path.join(out_dir, name)):
                written.append((name, what))
            else:
                failed.append((name, "nothing to draw"))
        except PictureFailed as e:
            plt.close("all")
            failed.append((name, str(e)))
    return written, failed


if __name__ == "__main__":
    main()
