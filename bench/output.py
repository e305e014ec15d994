"""A run's results on disk: latest.json, latest.md and the latest.png plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError:
    sys.exit("bench/run.py needs matplotlib for its plot: "
             ".venv/bin/pip install matplotlib  (or: pip install -e '.[bench]')")

from rows import AGENTS, CLIENTS, Client, median


def plot(results: dict[str, Any], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AGENTS), figsize=(13, 5), sharey=False)
    families: dict[str, list[Client]] = {}
    for c in CLIENTS:
        families.setdefault(c.family, []).append(c)
    for ax, (agent, title) in zip(axes, AGENTS.items(), strict=True):
        for family, clients in families.items():
            pts = [(c.sessions, median(results["rates"][agent][c.key])) for c in clients]
            pts = [(x, y) for x, y in pts if y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=family)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent sessions (greenlets / tasks / requests in flight / clients)")
        ax.set_ylabel("calls/s (guest-ping, median)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"qproxy vs peers — {m['cores']} cores, Python {m['python']}, "
                 f"{results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def write(results: dict[str, Any], md: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "latest.md").write_text(md)
    plot(results, out / "latest.png")
    print(f"wrote {out}/latest.json, latest.md, latest.png", flush=True)
