"""rosbag2 reading, writing and offline processing without ROS (on `rosbags`).

    BagReader   sqlite3 and mcap bags, Humble to Kilted, embedded definitions honoured
    BagWriter   mcap (default) or sqlite3 bags with metadata.yaml
"""
from .reader import BagError, BagMessage, BagReader, BagReadError, MessageDecodeError, TopicInfo
from .writer import BagWriter

__all__ = ["BagError", "BagMessage", "BagReadError", "BagReader", "BagWriter", "MessageDecodeError",
           "TopicInfo"]
