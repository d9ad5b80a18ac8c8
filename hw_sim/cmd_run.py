"""``bodycam-sim run CLIP``: the real firmware loop on a clip file.

As fast as possible by default, in real time with ``--realtime``. Prints each
marker as it happens (and as it arrives at an MQTT subscriber), a progress bar
(tqdm, on a terminal, for clips of 30 s or more; every line prints above it) and a
summary; scores the run when ``CLIP.truth.json`` exists. The clip (and the scenario)
are checked before anything is created. A broker given with ``--broker`` that cannot be
reached is a warning, not an error: markers wait in the outbox and are published when it
comes back, as on the camera.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from bodycam.device.config import AppConfig, load_config
from bodycam.device.errors import StorageError, UsageError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.mqtt_config import TlsConfig
from bodycam.hw_sim.clip_probe import probe_clip

_print_lock = threading.Lock()
_bar: Any = None  # the tqdm progress bar while one is shown: lines are written above it


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clip", type=Path, help="an MP4/MKV/MOV clip (any H.264 clip; audio optional)")
    p.add_argument("--out", type=Path, default=None, help="where footage and state go (default: runs/<clip name>)")
    p.add_argument("--realtime", action="store_true", help="pace frames at the clip's own speed")
    p.add_argument("--scenario", type=Path, default=None, help="JSON/TOML timeline of button and holster events")
    p.add_argument("--config", type=Path, default=None, help="firmware config (TOML); default: built-in defaults")
    p.add_argument("--model", type=Path, default=None, help="a .tflite model with its sidecar (default: shipped)")
    mq = p.add_mutually_exclusive_group()
    mq.add_argument("--broker", default=None, metavar="URL", help="publish to mqtt[s]://host:port instead of an embedded broker")
    mq.add_argument("--no-broker", action="store_true", help="no MQTT at all (footage is still tagged)")
    p.add_argument("--device-id", default=None, help="device id (default: config, else sim-cam-01)")
    p.add_argument("--start-time", default=None, help="wall-clock time of the first frame, RFC 3339 UTC, or 'now'")
    p.add_argument("--gnss-at", default=None, metavar="LAT,LON",
                   help="where the simulated GNSS walk starts (default: a fictional range near 52.2053,0.1218)")
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout instead of text")
    p.add_argument("--quiet", action="store_true", help="no per-marker lines")
    p.add_argument("--watch-cert", type=Path, default=None, metavar="PEM",
                   help="with --broker mqtts://: the client certificate of the simulator's watching subscriber "
                        "(mutual TLS; a read-only watcher identity: bodycam-base broker-acl --watcher CN)")
    p.add_argument("--watch-key", type=Path, default=None, metavar="PEM", help="the private key of --watch-cert")
    p.add_argument("--watch-ca", type=Path, default=None, metavar="PEM",
                   help="CA of the broker for the watcher (default: the config's mqtt.tls.ca_file)")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt footage at rest as the camera does (to atrest.base_key_file, else a throwaway "
                        "base key made in OUT/state/identity/base.age.key)")


def _say(text: str, stream: TextIO | None = None) -> None:
    with _print_lock:
        out = stream or sys.stdout
        if _bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=out)  # clears the bar, prints the line, redraws the bar below it
        else:
            print(text, file=out, flush=True)


class _SayHandler(logging.Handler):
    """Warnings from the firmware (publisher, GNSS, footage) as lines above the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say(f"  {record.levelname.lower()}: {record.getMessage()}", sys.stderr)
        except Exception:
            self.handleError(record)


def _fmt_t(ns: int) -> str:
    s = ns / 1e9
    return f"{int(s // 60):02d}:{s % 60:06.3f}"


def _marker_line(m: Marker) -> str:
    bits = [f"#{m.seq:<4d} {m.kind:<16s} t={_fmt_t(m.t_mono_ns)}"]
    if m.confidence is not None:
        bits.append(f"conf {m.confidence:.2f}")
    if m.media is not None:
        bits.append(f"-> {m.media.recording} seg {m.media.segment} +{m.media.offset_s:.3f}s frame {m.media.frame}")
    return "  marker " + "  ".join(bits)


def _start_bar(total_s: float) -> Any:
    """A tqdm bar on stderr counting seconds of footage."""
    global _bar
    from tqdm import tqdm

    _bar = tqdm(total=round(total_s, 1), unit="s", desc="  footage", file=sys.stderr, leave=False,
                bar_format="{desc} {bar} {percentage:3.0f}% {n:.1f}/{total:.1f} s [{elapsed}<{remaining}] {postfix}")
    return _bar


def _progress(bar: Any, total_s: float) -> Any:
    def show(frames: int, t_s: float) -> None:
        with _print_lock:
            bar.n = round(min(t_s, total_s), 1)
            bar.set_postfix_str(f"{frames} frames", refresh=False)
            bar.refresh()
    return show


def _close_bar() -> None:
    global _bar
    with _print_lock:
        if _bar is not None:
            _bar.close()
            _bar = None


def _watch_tls(args: argparse.Namespace, cfg: AppConfig, broker: str | None) -> TlsConfig | None:
    """The watcher's TLS from --watch-cert/--watch-key/--watch-ca (one-line errors naming the option)."""
    given = (args.watch_cert, args.watch_key, args.watch_ca)
    if all(g is None for g in given):
        return None
    if broker is None or not broker.startswith("mqtts://"):
        raise UsageError("--watch-cert/--watch-key/--watch-ca need --broker mqtts://host:port")
    if (args.watch_cert is None) != (args.watch_key is None):
        raise UsageError("--watch-cert and --watch-key go together")
    for flag, path in (("--watch-cert", args.watch_cert), ("--watch-key", args.watch_key),
                       ("--watch-ca", args.watch_ca)):
        if path is not None and not path.is_file():
            raise UsageError(f"{flag} {path}: no such file")
    ca = str(args.watch_ca) if args.watch_ca is not None else cfg.mqtt.tls.ca_file
    return TlsConfig(ca_file=ca, cert_file=None if args.watch_cert is None else str(args.watch_cert),
                     key_file=None if args.watch_key is None else str(args.watch_key))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bodycam.device.config import DeviceSection
    from bodycam.hw_sim.sim_run import SimOptions, run_clip
    from bodycam.hw_sim.truth import load_truth, truth_path_for

    cfg = load_config(args.config) if args.config is not None else AppConfig()
    device_id = args.device_id or (cfg.device.id if args.config is not None else "sim-cam-01")
    out = args.out if args.out is not None else Path("runs") / args.clip.stem
    cfg = replace(cfg, device=replace(cfg.device, id=device_id, data_dir=str(out)))
    DeviceSection(id=device_id)  # validate a --device-id given on the command line
    broker: str | None = "embedded"
    if args.no_broker:
        broker = None
    elif args.broker:
        if not args.broker.startswith(("mqtt://", "mqtts://")):
            raise UsageError(f"--broker {args.broker!r} must be mqtt://host:port or mqtts://host:port")
        broker = args.broker
    opts = SimOptions(clip=args.clip, out=out, config=cfg, realtime=args.realtime, broker=broker,
                      scenario=args.scenario, model=args.model, start_time=args.start_time,
                      gnss_at=_lat_lon(args.gnss_at) if args.gnss_at is not None else None, encrypt=args.encrypt,
                      watch_tls=_watch_tls(args, cfg, broker))
    # everything the run needs is checked before anything is created or printed
    clip = probe_clip(args.clip)
    if args.scenario is not None:
        from bodycam.hw_sim.gpio_sim import load_scenario

        load_scenario(args.scenario)
    text = not args.json
    duration = clip.duration_s
    show_progress = text and sys.stderr.isatty() and duration >= 30
    quiet_markers = not text or args.quiet
    broker_down = threading.Event()

    # the publisher can deliver a marker before the loop's listener has printed it: a "received"
    # line waits for its marker's line
    order_lock = threading.Lock()
    printed: set[str] = set()
    early: dict[str, Marker] = {}

    def received_line(m: Marker) -> str:
        return f"  received #{m.seq} {m.kind} at the subscriber"

    def on_marker(m: Marker) -> None:
        with order_lock:
            _say(_marker_line(m) + ("  (queued in the outbox: broker unreachable)" if broker_down.is_set() else ""))
            printed.add(m.id)
            if m.id in early:
                _say(received_line(early.pop(m.id)))

    def on_arrival(m: Marker, _t: float) -> None:
        with order_lock:
            if m.id in printed:
                _say(received_line(m))
            else:
                early.setdefault(m.id, m)

    def on_broker(up: bool, reason: str) -> None:
        if up:
            broker_down.clear()
            _say(f"  broker {broker} reachable: markers waiting in the outbox are being published", sys.stderr)
        else:
            broker_down.set()
            _say(f"bodycam-sim run: warning: broker {broker} is not reachable ({reason}); markers are kept in "
                 f"the outbox ({out / 'state' / 'outbox.sqlite'}) and published when it comes back (at the end "
                 f"the run waits up to {opts.drain_timeout_s:g} s for it)", sys.stderr)

    if text:
        _say(f"bodycam-sim run {args.clip} ({duration:.1f} s) -> {out}")
    handler = _SayHandler(logging.WARNING)
    logging.getLogger("bodycam").addHandler(handler)
    bar = _start_bar(duration) if show_progress else None
    try:
        report = run_clip(
            opts,
            on_marker=on_marker if not quiet_markers else None,
            on_arrival=on_arrival if not quiet_markers else None,
            on_progress=_progress(bar, duration) if bar is not None else None,
            on_broker=on_broker if broker not in (None, "embedded") else None,
        )
    finally:
        _close_bar()
        logging.getLogger("bodycam").removeHandler(handler)
    with order_lock:  # markers an earlier run left in the outbox
        for m in early.values():
            _say(received_line(m) + " (queued by an earlier run)")
    truth_file = truth_path_for(args.clip)
    score: dict[str, Any] | None = None
    if truth_file.is_file():
        from bodycam.hw_sim.scoring import score_events

        truth = load_truth(truth_file)
        fps = report.info.fps if report.info else truth.video.fps
        shot_frames = [s.frame for s in truth.shots]
        marker_frames = [round(m.t_mono_ns * fps / 1e9) for m in report.stats.markers if m.kind == "gunshot"]
        sc = score_events(shot_frames, marker_frames)
        errs = sorted(abs(e) for e in sc.timing_errors)
        score = {"truth": str(truth_file), "shots": len(shot_frames), "markers": len(marker_frames),
                 "tp": sc.tp, "fp": sc.fp, "fn": sc.fn, "precision": round(sc.precision, 4),
                 "recall": round(sc.recall, 4),
                 "timing_error_frames": {"median": errs[len(errs) // 2] if errs else None,
                                         "max": errs[-1] if errs else None}}
    summary = _summary(report, score)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    if report.error:
        _say(f"bodycam-sim run: error: {report.error} (markers up to the damage were kept)", sys.stderr)
        return 1
    if report.storage_errors:
        _say(f"bodycam-sim run: error: footage could not be written: {report.storage_errors[0]}", sys.stderr)
        return 3
    if report.undelivered and report.broker_url is not None:
        _say(f"bodycam-sim run: error: {report.undelivered} marker(s) not acknowledged by the broker; "
             "they stay in the outbox", sys.stderr)
        return 4
    return 0


def _lat_lon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--gnss-at {text!r} must be LAT,LON in degrees, e.g. 52.2053,0.1218") from None
    if not (-80 <= lat <= 80 and -180 <= lon <= 180):  # the walk must stay a valid position
        raise UsageError(f"--gnss-at {text!r}: latitude must be -80..80 and longitude -180..180")
    return lat, lon


def _summary(report: Any, score: dict[str, Any] | None) -> dict[str, Any]:
    st = report.stats
    media_s = st.media_s
    kinds = Counter(m.kind for m in st.markers)
    # what made each gunshot a shot (the fusion's rule: heard, flash, incident, video)
    rules = Counter(str(m.extra.get("rule", "?")) for m in st.markers if m.kind == "gunshot" and m.extra)
    loop_ms = [sum(v) for v in zip(*(st.stage_ns[s] for s in ("tagging", "audio", "preprocess", "events", "housekeeping")),
                                   strict=False)]
    return {
        "clip": str(report.clip),
        "out": str(report.out),
        "model": report.model_name,
        "detector": report.detector_backend,
        "frames": st.frames,
        "media_s": round(media_s, 3),
        "wall_s": round(st.wall_s, 3),
        "fps": round(st.frames / st.wall_s, 1) if st.wall_s > 0 else None,
        "x_realtime": round(media_s / st.wall_s, 2) if st.wall_s > 0 else None,
        "inference_ms": {"p50": round(st.percentile_ms("invoke", 50), 3), "p99": round(st.percentile_ms("invoke", 99), 3)},
        "read_ms_p50": round(st.percentile_ms("read", 50), 3),
        "loop_ms_p50_excl_read_invoke": round(sorted(loop_ms)[len(loop_ms) // 2] / 1e6, 3) if loop_ms else None,
        "markers": dict(kinds),
        "gunshot_rules": dict(sorted(rules.items())),
        "marker_list": [m.to_dict() for m in st.markers],
        "recordings": [
            {"id": r["recording"], "segments": len(r["segments"]), "protected": r["protected"],
             "markers": r["marker_count"], "start_utc": r["start_utc"], "end_utc": r["end_utc"],
             "error": r["error"]}
            for r in report.recordings
        ],
        "mqtt": None if report.broker_url is None else {
            "broker": report.broker_url, "acknowledged": report.published,
            "received_by_subscriber": len({m.id for m in report.received}),
            "undelivered": report.undelivered,
            "latency_ms_p50": _pct(report.latency_ms, 50), "latency_ms_p99": _pct(report.latency_ms, 99),
            "latency_samples": len(report.latency_ms),
        },
        "score": score,
        "error": report.error,
        "storage_errors": report.storage_errors,
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))], 2)


def _rules(s: dict[str, Any]) -> str:
    """`` (flash 5, heard 1)``: how the gunshots were decided, when known."""
    rules = s.get("gunshot_rules") or {}
    return " (" + ", ".join(f"{k} {v}" for k, v in rules.items()) + ")" if rules else ""


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        "summary",
        f"  model       {s['model']} on {s['detector']}",
        f"  frames      {s['frames']} ({s['media_s']:.1f} s of footage) in {s['wall_s']:.2f} s: "
        f"{s['fps']} fps, {s['x_realtime']}x real time",
        f"  inference   p50 {s['inference_ms']['p50']:.3f} ms, p99 {s['inference_ms']['p99']:.3f} ms",
        "  markers     " + (", ".join(f"{k} {v}" + (_rules(s) if k == "gunshot" else "")
                                      for k, v in sorted(s["markers"].items())) or "none"),
    ]
    for r in s["recordings"]:
        lines.append(f"  recording   {s['out']}/recordings/{r['id']}: {r['segments']} segment(s), {r['markers']} "
                     f"marker(s){', protected' if r['protected'] else ''}{', ERROR ' + r['error'] if r['error'] else ''}")
    if not s["recordings"]:
        lines.append("  recording   none")
    mq = s["mqtt"]
    if mq is not None:
        lines.append(f"  mqtt        {mq['broker']}: {mq['acknowledged']} acknowledged, {mq['received_by_subscriber']} "
                     f"received by the subscriber, " + (
                         f"latency (event frame to subscriber) p50 {mq['latency_ms_p50']} ms "
                         f"p99 {mq['latency_ms_p99']} ms over {mq['latency_samples']} of "
                         f"{sum(s['markers'].values())} markers" if mq["latency_samples"] else "no latency measured"))
        if mq["undelivered"]:
            lines.append(f"  outbox      {mq['undelivered']} marker(s) still queued for the broker")
    else:
        lines.append("  mqtt        off (--no-broker)")
    sc = s["score"]
    if sc is not None:
        te = sc["timing_error_frames"]
        lines.append(f"  vs truth    {sc['shots']} shots, {sc['markers']} gunshot markers: precision {sc['precision']:.3f}, "
                     f"recall {sc['recall']:.3f}, timing error median {te['median']} max {te['max']} frames")
    _say("\n".join(lines))


__all__ = ["StorageError", "add_arguments", "run"]
