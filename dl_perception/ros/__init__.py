"""ROS 2 adapters: thin nodes over the rclpy-free core."""

# Fast DDS transports for camera images across processes (FASTDDS_BUILTIN_TRANSPORTS): data over
# shared memory / TCP, and samples up to 4 MB sent whole (1280x720 float depth). With the 64 KB
# default fragments a subscriber spends 2.4x the CPU on a 320x240 RGB + depth pair, 4x on 640x480.
LARGE_DATA_TRANSPORTS = "LARGE_DATA?max_msg_size=4MB"
