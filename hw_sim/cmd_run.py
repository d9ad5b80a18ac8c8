"""``bodycam-sim run CLIP``: the real firmware loop on a clip file.

As fast as possible by default, in real time with ``--realtime``. Prints each
marker as it happens (and as it arrives at an MQTT subscriber), a progress bar
on long clips, and a summary; scores the run when ``CLIP.truth.json`` exists.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bodycam.device.config import AppConfig, load_config
from bodycam.device.errors import ClipError, StorageError, UsageError
from bodycam.device.uplink.markers import Marker

_print_lock = threading.Lock()


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
    p.add_argument("--start-time", default=None, help="wall-clock time of the first frame, RFC 3339 UTC")
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout instead of text")
    p.add_argument("--quiet", action="store_true", help="no per-marker lines")


def _say(text: str, stream: Any = None) -> None:
    with _print_lock:
        print(text, file=stream or sys.stdout, flush=True)


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


def _progress(total_s: float) -> Any:
    def show(frames: int, t_s: float) -> None:
        frac = min(1.0, t_s / total_s) if total_s > 0 else 0.0
        bar = "#" * int(frac * 30)
        with _print_lock:
            sys.stderr.write(f"\r  [{bar:<30s}] {frac * 100:5.1f}%  {frames} frames  t={t_s:7.1f}s")
            sys.stderr.flush()
    return show


def _duration_s(clip: Path) -> float:
    import av

    try:
        with av.open(str(clip)) as c:
            return float(c.duration or 0) / 1e6
    except Exception:
        return 0.0


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
                      scenario=args.scenario, model=args.model, start_time=args.start_time)
    if not args.clip.is_file():
        raise ClipError(f"{args.clip}: no such clip")
    text = not args.json
    duration = _duration_s(args.clip) if args.clip.is_file() else 0.0
    show_progress = text and sys.stderr.isatty() and duration >= 30
    if text:
        _say(f"bodycam-sim run {args.clip} ({duration:.1f} s) -> {out}")
    report = run_clip(
        opts,
        on_marker=(lambda m: _say(_marker_line(m))) if text and not args.quiet else None,
        on_arrival=(lambda m, _t: _say(f"  received #{m.seq} {m.kind} at the subscriber")) if text and not args.quiet else None,
        on_progress=_progress(duration) if show_progress else None,
    )
    if show_progress:
        sys.stderr.write("\n")
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


def _summary(report: Any, score: dict[str, Any] | None) -> dict[str, Any]:
    st = report.stats
    media_s = st.media_s
    kinds = Counter(m.kind for m in st.markers)
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


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        "summary",
        f"  model       {s['model']} on {s['detector']}",
        f"  frames      {s['frames']} ({s['media_s']:.1f} s of footage) in {s['wall_s']:.2f} s: "
        f"{s['fps']} fps, {s['x_realtime']}x real time",
        f"  inference   p50 {s['inference_ms']['p50']:.3f} ms, p99 {s['inference_ms']['p99']:.3f} ms",
        "  markers     " + (", ".join(f"{k} {v}" for k, v in sorted(s["markers"].items())) or "none"),
    ]
    for r in s["recordings"]:
        lines.append(f"  recording   {s['out']}/recordings/{r['id']}: {r['segments']} segment(s), {r['markers']} "
                     f"marker(s){', protected' if r['protected'] else ''}{', ERROR ' + r['error'] if r['error'] else ''}")
    if not s["recordings"]:
        lines.append("  recording   none")
    mq = s["mqtt"]
    if mq is not None:
        lines.append(f"  mqtt        {mq['broker']}: {mq['acknowledged']} acknowledged, {mq['received_by_subscriber']} "
                     f"received by the subscriber, latency p50 {mq['latency_ms_p50']} ms p99 {mq['latency_ms_p99']} ms")
    else:
        lines.append("  mqtt        off (--no-broker)")
    sc = s["score"]
    if sc is not None:
        te = sc["timing_error_frames"]
        lines.append(f"  vs truth    {sc['shots']} shots, {sc['markers']} gunshot markers: precision {sc['precision']:.3f}, "
                     f"recall {sc['recall']:.3f}, timing error median {te['median']} max {te['max']} frames")
    _say("\n".join(lines))


__all__ = ["StorageError", "add_arguments", "run"]
