"""`bodycam-sim`: the hardware simulator's command line.

Each sub-command lives in its own module ``bodycam.hw_sim.cmd_<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when
chosen, so ``bodycam-sim --help`` stays fast. Deliberate errors
(:class:`~bodycam.device.errors.BodycamError`) become one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bodycam.device.console import pipe_safe
from bodycam.device.errors import BodycamError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bodycam.hw_sim.cmd_run", "run the real firmware loop on a clip"),
    "make-clip": ("bodycam.hw_sim.cmd_make_clip", "render a synthetic first-person clip with ground truth"),
    "make-dataset": ("bodycam.hw_sim.cmd_make_dataset", "render train/val/test clips with an index"),
    "inspect": ("bodycam.hw_sim.cmd_inspect", "show a clip's streams, frame count and truth summary"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bodycam-sim", description="bodycam hardware simulator")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


@pipe_safe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args))
    except BodycamError as exc:
        print(f"bodycam-sim {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bodycam-sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
