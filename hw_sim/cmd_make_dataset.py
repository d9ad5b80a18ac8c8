"""`bodycam-sim make-dataset DIR --clips N --seed K`: train/val/test clips + index.json."""

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
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    parser.add_argument("--fps", default="30", help="frame rate (default 30)")
    parser.add_argument("--workers", default="2", help="processes, 1..2 (default 2)")


def run(args: argparse.Namespace) -> int:
    from bodycam.hw_sim.dataset import make_dataset

    clips = parse_int("clips", args.clips)
    if not 1 <= clips <= 100_000:
        raise UsageError(f"clips {clips} out of range 1..100000")
    workers = parse_int("workers", args.workers)
    if not 1 <= workers <= 2:
        raise UsageError(f"workers {workers} out of range 1..2")
    w, h = parse_size(args.size)
    base = ClipSpec(seconds=parse_float("seconds", args.seconds), width=w, height=h, fps=parse_float("fps", args.fps))
    base.validate()
    index = make_dataset(args.dir, clips, parse_seed(args.seed), base, workers=workers)
    c = index["counts"]
    print(
        f"{args.dir}: {len(index['clips'])} clips (train {c['train']}, val {c['val']}, test {c['test']}; "
        f"{index['shot_free']} shot-free), index {args.dir}/index.json"
    )
    return 0
