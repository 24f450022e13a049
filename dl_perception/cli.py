"""dl-perception: train, evaluate, benchmark and run the dl_perception stack.

Subcommands live in dl_perception/commands/ (one module per capability, found automatically).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from . import commands

# verbs that group per-network or per-format subcommands
GROUPS = {
    "convert": "convert foreign weights to a dl_perception checkpoint",
    "train": "train a network",
    "eval": "evaluate a network or pipeline",
    "bench": "benchmarks (ratios against a baseline in the same run)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dl-perception", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (anywhere before '--')")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbs = {"top": top}
    for verb, help_text in GROUPS.items():
        verbs[verb] = top.add_parser(verb, help=help_text).add_subparsers(
            dest="target", required=True, metavar="TARGET")
    for module in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        registrar = getattr(importlib.import_module(f"{commands.__name__}.{module}"), "register", None)
        if registrar is not None:
            registrar(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = []
    if "--" in argv:  # ROS arguments for `launch`, `replay`, `record`
        split = argv.index("--")
        argv, ros_args = argv[:split], argv[split + 1:]
    elif "--ros-args" in argv:  # as launch_ros appends them
        split = argv.index("--ros-args")
        argv, ros_args = argv[:split], argv[split + 1:]
    if argv[:1] == ["bench"] and (len(argv) == 1 or argv[1].startswith("-")) \
            and not {"-h", "--help"} & set(argv):
        argv.insert(1, "stack")  # `dl-perception bench` is the whole-stack benchmark
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    args = build_parser().parse_args(argv)
    args.ros_args = ros_args
    if getattr(args, "ros_process", False):
        # long-running ROS processes end with status 0 on SIGINT/SIGTERM at any moment
        from .ros.signals import stop_on_signals
        stop_on_signals()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the one error path of every command: a line, exit status 1
        if getattr(args, "ros_process", False):
            from .ros.signals import stop_requested
            if stop_requested():
                return 0  # a stop signal during start-up shut the ROS context down under it
        if debug:
            traceback.print_exc()
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 1


def describe_error(error: Exception) -> str:
    """The project's errors (bad input the user can fix) say what is wrong; anything else is
    named as unexpected, with a pointer to --debug."""
    from .core.checkpoint import CheckpointError
    from .models.dronet_convert import ConversionError
    if isinstance(error, (CheckpointError, ConversionError, ValueError, OSError)):
        return str(error) or type(error).__name__
    return (f"unexpected {type(error).__name__}: {error} (run with --debug for the traceback, "
            "and please report it)")


def console() -> None:
    """The dl-perception console script."""
    from .ros.signals import exit_process
    exit_process(main())


if __name__ == "__main__":
    console()
