"""The goals (ratios within one run) and the markdown report of a run's results."""

from __future__ import annotations

from typing import Any

from rows import AGENTS, CLIENTS, median


def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def build_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    rates = results["rates"]["qemu-ga"]
    med = {k: median(v) for k, v in rates.items()}
    serve_note = results.get("serve_note")
    goals: list[dict[str, Any]] = []

    def ratio_row(label: str, num: float | None, den: float | None, goal: float,
                  detail: str, missing: str | None = None) -> None:
        value = num / den if num is not None and den else None
        goals.append({"row": label, "value": value, "goal": f"≥ {goal:g}",
                      "met": None if value is None else value >= goal,
                      "detail": detail if value is not None else (missing or "not measured")})

    ratio_row("qproxy API, one session, sequential ÷ raw client sequential",
              med["qproxy-1"], med["raw-1"], 0.8,
              f"{fmt_rate(med['qproxy-1'])} vs {fmt_rate(med['raw-1'])} calls/s")
    ratio_row("(extra) gevent floor, sequential ÷ raw client sequential",
              med["floor-1"], med["raw-1"], 0.8,
              f"{fmt_rate(med['floor-1'])} vs {fmt_rate(med['raw-1'])} calls/s: the event "
              "loop's own cost per call (bench/floor.py)")
    ratio_row("(extra) qproxy API, sequential ÷ gevent floor, sequential",
              med["qproxy-1"], med["floor-1"], 0.9,
              f"{fmt_rate(med['qproxy-1'])} vs {fmt_rate(med['floor-1'])} calls/s: "
              "qproxy's own cost per call")
    ratio_row("qproxy API, 64 greenlets ÷ raw client with 64 in flight",
              med["qproxy-64"], med["raw-64"], 0.9,
              f"{fmt_rate(med['qproxy-64'])} vs {fmt_rate(med['raw-64'])} calls/s")
    ratio_row("qproxy serve with 64 raw clients ÷ raw client with 64 in flight",
              med["serve-64"], med["raw-64"], 0.6,
              f"{fmt_rate(med['serve-64'])} vs {fmt_rate(med['raw-64'])} calls/s",
              missing=serve_note)
    ratio_row("qproxy API ÷ qemu.qmp legacy, sequential", med["qproxy-1"], med["qmp-legacy"],
              2.5, f"{fmt_rate(med['qproxy-1'])} vs {fmt_rate(med['qmp-legacy'])} calls/s")
    ratio_row("qproxy API, 64 greenlets ÷ qemu.qmp QMPClient, 64 concurrent",
              med["qproxy-64"], med["qmp-async-64"], 4,
              f"{fmt_rate(med['qproxy-64'])} vs {fmt_rate(med['qmp-async-64'])} calls/s")
    dec = results.get("decoder", {})
    if dec:
        small = dec["small"]
        d, b = median(small["decoder_msgs_per_s"]), median(small["lines_json_loads_msgs_per_s"])
        ratio_row("decoder, small replies, msgs/s ÷ json.loads per line", d, b, 1.0,
                  f"{fmt_rate(d)} vs {fmt_rate(b)} msgs/s (64 KiB chunks)")
        one = dec["small_one_per_read"]
        d, b = median(one["decoder_msgs_per_s"]), median(one["lines_json_loads_msgs_per_s"])
        ratio_row("(extra) decoder, small replies fed one per read ÷ json.loads per line",
                  d, b, 1.0, f"{fmt_rate(d)} vs {fmt_rate(b)} msgs/s (one reply per feed, "
                  "as with one call in flight)")
        big = dec["big"]
        whole = median(big["json_loads_whole_mb_per_s"])
        for size, name in ((65536, "64 KiB"), (4096, "4 KiB")):
            rate = median(big[f"decoder_{size}_mb_per_s"])
            what = ("one 64 MiB reply fed in 64 KiB chunks" if size == 65536 else
                    "the same reply fed in 4 KiB chunks (virtio-serial read size)")
            ratio_row(f"decoder, {what} ÷ json.loads of the whole reply", rate, whole, 0.5,
                      f"{rate:,.0f} vs {whole:,.0f} MB/s ({name} chunks)")
    fr = results.get("file_read", {})
    if "raw_seconds" in fr:
        raw_t, q_t = median(fr["raw_seconds"]), median(fr["qproxy_seconds"])
        ratio_row("48 MiB guest-file-read (qemu-ga): raw socket + json.loads time ÷ "
                  "qproxy API time", raw_t, q_t, 0.8,
                  f"{raw_t:.3f} s vs {q_t:.3f} s; default max_message_size: "
                  f"{fr.get('default_max_message_size')}")
    elif "error" in fr:
        ratio_row("48 MiB guest-file-read (qemu-ga): raw socket + json.loads time ÷ "
                  "qproxy API time", None, None, 0.8, "", missing=fr["error"])
    bpc = results.get("bytes_per_call", {})
    if "ratio" in bpc:
        goals.append({"row": "bytes written to the agent per call ÷ the request's own size",
                      "value": bpc["ratio"], "goal": "1.0 (no sync per call)",
                      "met": abs(bpc["ratio"] - 1.0) < 1e-9,
                      "detail": f"{bpc['bytes_written']:,} B written for {bpc['calls']:,} calls "
                                f"({bpc['request_bytes']:,} B of requests)"})
    scale = results.get("scale", {})
    g = scale.get("greenlets_10000", {})
    if "error" in g or not g:
        goals.append({"row": "10,000 greenlet sessions with a call in flight each "
                             "(reference agent)", "value": None,
                      "goal": "completes; RSS < 200 MB", "met": None if not g else False,
                      "detail": g.get("error", "not measured")})
    else:
        ok = g["failed"] == 0 and g["calls"] == g["expected"] and g["rss_peak_mib"] < 200
        goals.append({"row": "10,000 greenlet sessions with a call in flight each "
                             "(reference agent)", "value": g["rss_peak_mib"],
                      "unit": "MiB", "goal": "completes; RSS < 200 MB", "met": ok,
                      "detail": f"{g['calls']:,}/{g['expected']:,} calls in {g['seconds']:.2f} s "
                                f"(incl. a 1 s hold), {g['max_in_flight']:,} in flight at once, "
                                f"peak RSS {g['rss_peak_mib']:.0f} MiB"})
    s = scale.get("serve_2000", {})
    if "error" in s or not s:
        goals.append({"row": "2,000 clients connected to qproxy serve at once, each making "
                             "calls", "value": None, "goal": "all served; RSS < 200 MB",
                      "met": None, "detail": s.get("error", "not measured")})
    else:
        ok = s["failed"] == 0 and s["calls"] == s["expected"] and s["server_rss_peak_mib"] < 200
        goals.append({"row": "2,000 clients connected to qproxy serve at once, each making "
                             "calls", "value": s["server_rss_peak_mib"], "unit": "MiB",
                      "goal": "all served; RSS < 200 MB", "met": ok,
                      "detail": f"{s['calls']:,}/{s['expected']:,} calls, {s['failed']} failed, "
                                f"{s['seconds']:.2f} s; server RSS "
                                f"{s['server_rss_connected_mib']:.0f} MiB connected, "
                                f"peak {s['server_rss_peak_mib']:.0f} MiB"})
    return goals


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run {results['started']} of qproxy {results.get('qproxy_tree', '?')} — "
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"gevent {m['gevent']}, ijson {m['ijson']} (backend {m['ijson_backend']}), "
        f"qemu.qmp {m.get('qemu.qmp', '?')}, {m.get('qemu-ga', 'qemu-ga ?')}; "
        f"{results['rounds']} rounds of {results['duration']:g} s, medians; "
        f"total {results['seconds']:.0f} s.",
        "",
        "### Goals (ratios within this run)",
        "",
        "| row | value | goal | |",
        "|---|---:|---|---|",
    ]
    for g in results["goals"]:
        v = g["value"]
        value = "—" if v is None else (f"{v:.0f} {g['unit']}" if g.get("unit") else f"{v:.2f}")
        met = {True: "met", False: "**missed**", None: "n/a"}[g["met"]]
        lines.append(f"| {g['row']} | {value} | {g['goal']} | {met} |")
    lines += ["", "Details:", ""]
    lines += [f"- {g['row']}: {g['detail']}" for g in results["goals"]]
    lines += ["", "### Calls per second (guest-ping; median over rounds, min-max) and the "
              "client side's CPU µs per call (median)", "",
              "| client | sessions | " + " | ".join(f"{t} calls/s | CPU µs/call"
                                                    for t in AGENTS.values()) + " |",
              "|---|---:|" + "---:|---:|" * len(AGENTS)]
    for c in CLIENTS:
        cells = []
        for a in AGENTS:
            xs = results["rates"][a][c.key]
            cpu = median(results["cpu_us_per_call"][a][c.key])
            if xs:
                cells.append(f"{median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})")
                cells.append("—" if cpu is None else f"{cpu:.1f}")
            elif c.key == "serve-64" and results.get("serve_note"):
                cells += [results["serve_note"], ""]
            else:
                cells += [results["errors"].get(f"{a}/{c.key}", "—"), ""]
        lines.append(f"| {c.label} | {c.sessions:,} | " + " | ".join(cells) + " |")
    lines += ["", "CPU µs/call is the CPU time of the process doing the client's work divided "
              "by its calls: this process for the raw and qproxy API clients, the qemu.qmp "
              "worker for qemu.qmp, the `qproxy serve` process for the serve row (its 64 raw "
              "clients not included). Unlike calls/s it hardly depends on what else the "
              "machine runs."]
    dec = results.get("decoder")
    if dec:
        big = dec["big"]
        lines += ["", "### Decoder (CPU only)", "",
                  "| what | decoder | baseline |", "|---|---:|---:|",
                  f"| 200,000 small replies, 64 KiB chunks (msgs/s) | "
                  f"{median(dec['small']['decoder_msgs_per_s']):,.0f} | "
                  f"{median(dec['small']['lines_json_loads_msgs_per_s']):,.0f} "
                  "(newline framing + json.loads) |",
                  f"| 100,000 small replies, one per feed (msgs/s) | "
                  f"{median(dec['small_one_per_read']['decoder_msgs_per_s']):,.0f} | "
                  f"{median(dec['small_one_per_read']['lines_json_loads_msgs_per_s']):,.0f} "
                  "(newline framing + json.loads) |",
                  f"| one {big['bytes'] / 2**20:.0f} MiB reply, 64 KiB chunks (MB/s) | "
                  f"{median(big['decoder_65536_mb_per_s']):,.0f} | "
                  f"{median(big['json_loads_whole_mb_per_s']):,.0f} (json.loads, whole) |",
                  f"| the same reply, 4 KiB chunks (MB/s) | "
                  f"{median(big['decoder_4096_mb_per_s']):,.0f} | "
                  f"{median(big['json_loads_whole_mb_per_s']):,.0f} (json.loads, whole) |"]
    fr = results.get("file_read", {})
    if "raw_seconds" in fr:
        lines += ["", "### One 48 MiB read (seconds, median)", "",
                  "| agent | raw socket + json.loads | qproxy API |", "|---|---:|---:|",
                  f"| qemu-ga guest-file-read | {median(fr['raw_seconds']):.3f} | "
                  f"{median(fr['qproxy_seconds']):.3f} |",
                  f"| reference agent qproxy-blob (64 MiB string) | "
                  f"{median(fr['blob_raw_seconds']):.3f} | "
                  f"{median(fr['blob_qproxy_seconds']):.3f} |"]
    if results["errors"]:
        lines += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    return "\n".join(lines) + "\n"
