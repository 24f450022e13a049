"""Benchmarks that need a ROS graph: node paths, bag replay, the simulator, stack_node and
launch."""
