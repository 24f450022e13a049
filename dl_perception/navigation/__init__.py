"""Visual odometry and the DroNet control law: what turns the networks' outputs into motion
estimates and commands (no rclpy)."""
