"""Every benchmark that runs without ROS (`dl-perception bench ...`): the networks, the stack
engine, bags; and the hostile inputs the fuzz suite and the soak draw from."""
