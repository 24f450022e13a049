"""The built-in drone simulator (no ROS): procedural seeded city worlds rendered by MuJoCo, a
quadrotor body driven by velocity commands, an expert autopilot that labels what it sees, and
recording to the sequence layout (docs/datasets.md) plus a rosbag2. docs/simulator.md.
"""
import os

# headless rendering; must be chosen before mujoco is first imported anywhere
os.environ.setdefault("MUJOCO_GL", "egl")
