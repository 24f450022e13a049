"""The core every layer builds on, with no rclpy and no network-specific code: images, geometry,
checkpoints, devices, paths and the declarative preprocessing (docs/architecture.md lists what
moves here in phase B of the layout change)."""
