"""`bodycam-sim inspect CLIP [--json]`: streams, duration, frame count and truth summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bodycam.device.errors import ClipError
from bodycam.hw_sim.truth import load_truth, truth_path_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", metavar="CLIP", help="an MP4 clip")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def probe_clip(path: str | Path) -> dict[str, Any]:
    """Streams (codec, size, fps, sample rate), duration and video frame count of ``path``.
    Frames are counted from the demuxed video packets (no decoding)."""
    import av

    p = Path(path)
    if not p.is_file():
        raise ClipError(f"{p}: no such clip")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ClipError(f"{p}: cannot open clip: {exc}") from None
    try:
        streams: list[dict[str, Any]] = []
        vstream = None
        for s in container.streams:
            cc: Any = s.codec_context
            if s.type == "video":
                vstream = vstream or s
                rate = s.average_rate or s.guessed_rate
                streams.append(
                    {"type": "video", "index": s.index, "codec": cc.name, "width": cc.width, "height": cc.height,
                     "fps": float(rate) if rate else None, "pix_fmt": cc.pix_fmt}
                )
            elif s.type == "audio":
                streams.append(
                    {"type": "audio", "index": s.index, "codec": cc.name, "sample_rate": cc.sample_rate,
                     "channels": cc.channels}
                )
        if vstream is None:
            raise ClipError(f"{p}: no video stream")
        frames = 0
        end = 0.0
        for pkt in container.demux(vstream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            frames += 1
            end = max(end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
        duration = float(container.duration) / 1e6 if container.duration else end
    except av.error.FFmpegError as exc:
        raise ClipError(f"{p}: corrupt clip: {exc}") from None
    finally:
        container.close()
    if frames == 0:
        raise ClipError(f"{p}: no video frames")
    return {"clip": str(p), "streams": streams, "duration_s": round(duration, 6), "video_end_s": round(end, 6),
            "frames": frames}


def run(args: argparse.Namespace) -> int:
    info = probe_clip(args.clip)
    tp = truth_path_for(args.clip)
    truth = load_truth(tp) if tp.exists() else None
    if truth is not None:
        info["truth"] = {"path": str(tp), **truth.to_dict()}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['clip']}: {info['duration_s']:.3f} s, {info['frames']} video frames")
    for s in info["streams"]:
        if s["type"] == "video":
            print(f"  video #{s['index']}: {s['codec']} {s['width']}x{s['height']} {s['fps']:.3f} fps {s['pix_fmt']}")
        else:
            print(f"  audio #{s['index']}: {s['codec']} {s['sample_rate']} Hz, {s['channels']} ch")
    if truth is None:
        print(f"  no truth file ({tp})")
        return 0
    g = truth.generator
    print(f"  truth: {tp.name} ({g.name} {g.version}, seed {g.seed}, scene {g.scene})")
    print(f"  shots: {len(truth.shots)}")
    for s in truth.shots:
        xy = "off-screen" if s.muzzle_xy is None else f"({s.muzzle_xy[0]:.0f}, {s.muzzle_xy[1]:.0f})"
        extra = ", occluded" if s.occluded else ""
        print(f"    frame {s.frame:6d}  t {s.t_s:8.3f} s  {s.shooter:6s} muzzle {xy}  intensity {s.intensity:.2f}"
              f"  flash {s.flash_frames}f{extra}")
    print(f"  distractors: {len(truth.distractors)}")
    for d in truth.distractors:
        drawn = ", weapon drawn" if d.while_drawn else ""
        print(f"    {d.kind:16s} frames {d.start_frame}-{d.end_frame}  {d.start_s:.3f}-{d.end_s:.3f} s{drawn}")
    states = ", ".join(f"{w.state} {w.start_frame}-{w.end_frame}" for w in truth.weapon)
    print(f"  weapon ({truth.weapon[0].weapon if truth.weapon else '-'}): {states}")
    return 0
