"""Subcommands of `dl-perception`, one module per capability.

Every module here defines `register(verbs)`, where `verbs` maps a top-level verb ("train",
"eval", "bench", "convert", ...) to its argparse sub-parser collection, plus `top`, the
collection of top-level commands. A module adds its own entries (e.g. `train dronet`) and sets
`func` on each parser; handlers import what they need when they run, so `--help` stays fast
and core commands never load rclpy. New modules are discovered automatically.
"""
