"""`dl-perception launch CONFIG.yaml`: start the nodes a ROS parameters file configures, from the
same file `ros2 launch dl_perception perception.launch.py` reads: each node in a process of its
own (as ros2 launch does), or all in one process with `--single-process`.

Every top-level key of the YAML naming a known executable starts that node with its
`ros__parameters`; `/**` sections apply to all nodes, as in ROS.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import yaml

from .. import registry
from .nodes import NODE_CLASSES, node_class

# parameters every rclpy node declares itself
NODE_PARAMETERS = {"use_sim_time", "start_type_description_service"}
STOP_TIMEOUT_S = 10.0  # after SIGINT, before SIGTERM (launch's default is 5 s + 5 s)


def load_config(config_path: str) -> dict:
    with open(config_path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a ROS parameters mapping")
    return config


def _sections(config: dict) -> dict[str, dict]:
    """Node name -> its ros__parameters ('**' for the section applying to all)."""
    return {str(key).lstrip("/"): ((section or {}).get("ros__parameters") or {})
            for key, section in config.items()}


def configured_nodes(config_path: str) -> list[str]:
    """Node names the parameters file configures, in file order; nodes a stack_node hosts are
    started by it, not on their own (their sections only hold their parameters)."""
    names, hosted = [], set()
    for name, parameters in _sections(load_config(config_path)).items():
        if name == "**":
            continue
        if name not in NODE_CLASSES:
            raise ValueError(f"{config_path}: unknown node '{name}' "
                             f"(known: {', '.join(sorted(NODE_CLASSES))})")
        names.append(name)
        if name == "stack_node":
            hosted.update(parameters.get("nodes", registry.hosted_defaults()))
    return [name for name in names if name not in hosted]


def declared_parameters(name: str) -> set[str]:
    """The parameters node `name` declares (read from its class: nothing is started)."""
    return {p.name for p in node_class(name).declared_params()} | NODE_PARAMETERS


def _flatten(parameters: dict, prefix: str = "") -> list[str]:
    """Parameter names of a ros__parameters mapping (nested mappings are dotted names)."""
    names = []
    for key, value in parameters.items():
        if isinstance(value, dict):
            names += _flatten(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def check_config(config_path: str) -> list[str]:
    """Problems of a parameters file: unknown nodes, and parameters in a node's section (or in
    `/**`) that the node does not declare (a ROS node ignores them silently)."""
    sections = _sections(load_config(config_path))
    problems = []
    nodes = [n for n in sections if n != "**"]
    for name in nodes:
        if name not in NODE_CLASSES:
            problems.append(f"unknown node '{name}' (known: {', '.join(sorted(NODE_CLASSES))})")
            continue
        declared = declared_parameters(name)
        for parameter in _flatten(sections[name]):
            if parameter not in declared:
                problems.append(f"{name}: unknown parameter '{parameter}'")
    known = [n for n in nodes if n in NODE_CLASSES]
    for parameter in _flatten(sections.get("**", {})):
        if known and not any(parameter in declared_parameters(n) for n in known):
            problems.append(f"/**: parameter '{parameter}' is declared by none of {known}")
    return problems


def params_for_any_namespace(config_path: str, folder: str) -> str:
    """A copy of the parameters file whose node sections also apply under a namespace: ROS
    matches a plain `dronet_node:` key only in the root namespace, `/**/dronet_node:` in any
    (so `-r __ns:=/drone1` keeps each node's parameters)."""
    config = load_config(config_path)
    widened = {key if str(key).startswith("/") else f"/**/{key}": section
               for key, section in config.items()}
    path = os.path.join(folder, os.path.basename(config_path))
    with open(path, "w") as handle:
        yaml.safe_dump(widened, handle, sort_keys=False)
    return path


def nodes_to_start(config_path: str, only: list[str] | None) -> list[str]:
    """The configured nodes, or `only` (which may name known nodes the file does not configure:
    those start with their defaults)."""
    names = configured_nodes(config_path)
    if not only:
        return names
    for name in only:
        node_class(name)  # unknown names fail here
    return list(only)


def launch(config_path: str, only: list[str] | None = None, single_process: bool = False,
           executor: str = "single", duration: float | None = None,
           ros_args: list[str] | None = None, check: bool = False) -> int:
    problems = check_config(config_path)
    for problem in problems:
        print(f"{config_path}: {problem}", file=sys.stderr)
    if check:
        print(f"{config_path}: {'ok' if not problems else f'{len(problems)} problems'}")
        return 1 if problems else 0
    names = nodes_to_start(config_path, only)
    unconfigured = [n for n in names if n not in configured_nodes(config_path)]
    if unconfigured:
        print(f"not configured in {config_path}, started with defaults: {', '.join(unconfigured)}")
    with tempfile.TemporaryDirectory(prefix="dl_perception_launch_") as folder:
        params = params_for_any_namespace(config_path, folder)
        if single_process:
            from .node_base import run_nodes
            args = ["dl-perception", "--ros-args", "--params-file", params, *(ros_args or [])]
            factories = [lambda name=name: node_class(name)(name) for name in names]
            print(f"launching {', '.join(names)} from {config_path} in one process "
                  f"({executor}-threaded executor)")
            return run_nodes(factories, args=args, executor_kind=executor, duration=duration)
        print(f"launching {', '.join(names)} from {config_path}, one process each")
        return run_processes(names, params, ros_args or [], duration)


def node_command(name: str, config_path: str, ros_args: list[str]) -> list[str]:
    """The command line of one node process, as ros2 launch builds it for a launch_ros Node."""
    return [sys.executable, "-m", "dl_perception.ros.entry", name, "--ros-args",
            "-r", f"__node:={name}", "--params-file", config_path, *ros_args]


def run_processes(names: list[str], config_path: str, ros_args: list[str],
                  duration: float | None) -> int:
    """Start one process per node and supervise them: a node that fails stops the others (its
    status is returned); SIGINT/SIGTERM or `duration` stops all with SIGINT (then SIGTERM, then
    SIGKILL, as launch escalates) and returns 0 when each ended cleanly."""
    from . import LARGE_DATA_TRANSPORTS
    from .signals import mark_running, stop_requested
    mark_running()
    # images cross processes now: unfragmented large samples unless the user chose transports
    env = {"FASTDDS_BUILTIN_TRANSPORTS": LARGE_DATA_TRANSPORTS, **os.environ}
    processes: dict[str, subprocess.Popen] = {}
    status = 0
    try:
        for name in names:
            processes[name] = subprocess.Popen(node_command(name, config_path, ros_args), env=env)
        deadline = None if duration is None else time.monotonic() + duration
        while not stop_requested() and (deadline is None or time.monotonic() < deadline):
            failed = {n: p.returncode for n, p in processes.items()
                      if p.poll() is not None and p.returncode != 0}
            if failed:
                for name, code in failed.items():
                    print(f"{name} exited with status {code}; stopping the others",
                          file=sys.stderr)
                status = next(iter(failed.values()))
                break
            if all(p.poll() is not None for p in processes.values()):
                break
            time.sleep(0.1)
    finally:
        stopped = stop_processes(processes)
    if status == 0 and any(code != 0 for code in stopped.values()):
        for name, code in stopped.items():
            if code != 0:
                print(f"{name} ended with status {code}", file=sys.stderr)
        status = 1
    return status


def stop_processes(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
    """SIGINT to every process still running, SIGTERM after STOP_TIMEOUT_S, SIGKILL after as
    long again; each process's exit status."""
    for escalation in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        running = [p for p in processes.values() if p.poll() is None]
        for process in running:
            process.send_signal(escalation)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while running and time.monotonic() < deadline:
            try:
                running[0].wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            running = [p for p in running if p.poll() is None]
        if not running:
            break
    return {name: p.returncode for name, p in processes.items()}
