"""The running process: ``twistd shardstream``'s options, the service that
listens, reloads and drains, and the supervisor of workers on every core."""
