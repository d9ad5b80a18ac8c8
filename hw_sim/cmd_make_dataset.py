"""`bodycam-sim make-dataset DIR --clips N --seed K [--families [--hold-out SPEC] [--held-out-clips M]]`:
train/val/test clips (+ heldout/ with families) + index.json."""

from __future__ import annotations

import argparse

from bodycam.device.errors import UsageError
from bodycam.hw_sim.cmd_make_clip import parse_float, parse_int, parse_seed, parse_size
from bodycam.hw_sim.timeline import ClipSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="output directory (created)")
    parser.add_argument("--clips", required=True, help="number of clips (>= 1)")
    parser.add_argument("--seed", required=True, help="data-set seed, 0..2**32-1")
    parser.add_argument("--seconds", default="20", help="clip duration (default 20)")
    parser.add_argument("--size", default=None,
                        help="WIDTHxHEIGHT (default 640x360; with --families: from the camera family unless given)")
    parser.add_argument("--fps", default="30", help="frame rate (default 30)")
    parser.add_argument("--workers", default="2", help="processes, 1..2 (default 2)")
    parser.add_argument("--families", action="store_true",
                        help="domain-randomised: every clip one draw of named families (scene, weather, flash, fps, "
                             "camera, distance, distractors); --size/--fps then come from the families")
    parser.add_argument("--hold-out", default=None,
                        help="families kept out of train/val/test, e.g. scene=indoor,flash=vents_orange,fps=25 "
                             "(default with --families: that; 'none': nothing)")
    parser.add_argument("--shot-free", action="store_true",
                        help="with --families: every clip shot-free and distractor-heavy (false-alarm footage)")
    parser.add_argument("--held-out-clips", default=None,
                        help="clips from held-out families, in DIR/heldout (default: 30%% of --clips)")


def run(args: argparse.Namespace) -> int:
    from bodycam.hw_sim.dataset import make_dataset

    clips = parse_int("clips", args.clips)
    if not 1 <= clips <= 100_000:
        raise UsageError(f"clips {clips} out of range 1..100000")
    workers = parse_int("workers", args.workers)
    if not 1 <= workers <= 2:
        raise UsageError(f"workers {workers} out of range 1..2")
    w, h = parse_size(args.size or "640x360")
    base = ClipSpec(seconds=parse_float("seconds", args.seconds), width=w, height=h, fps=parse_float("fps", args.fps))
    base.validate()
    if not args.families:
        if args.hold_out is not None or args.held_out_clips is not None or args.shot_free:
            raise UsageError("--hold-out, --held-out-clips and --shot-free need --families")
        index = make_dataset(args.dir, clips, parse_seed(args.seed), base, workers=workers)
    else:
        from bodycam.hw_sim.families import DEFAULT_HOLD_OUT, HoldOut

        hold = HoldOut.of(DEFAULT_HOLD_OUT) if args.hold_out is None else HoldOut.parse(args.hold_out)
        held = round(0.3 * clips) if args.held_out_clips is None else parse_int("held-out-clips", args.held_out_clips)
        if held and not hold.families:
            raise UsageError("--held-out-clips > 0 but nothing is held out; pass --hold-out AXIS=FAMILY or 0 clips")
        index = make_dataset(args.dir, clips, parse_seed(args.seed), base, workers=workers, hold=hold,
                             held_out_clips=held, size=(w, h) if args.size else None, shot_free=args.shot_free)
    c = index["counts"]
    held_txt = f", heldout {c['heldout']} ({index['hold_out']})" if c.get("heldout") else ""
    print(
        f"{args.dir}: {len(index['clips'])} clips (train {c['train']}, val {c['val']}, test {c['test']}{held_txt}; "
        f"{index['shot_free']} shot-free), index {args.dir}/index.json"
    )
    return 0
