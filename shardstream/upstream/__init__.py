"""The Twisted shell toward the shards: the connection pool and endpoints,
one call per shard request with its deadlines, the balancer over replicas,
health checks, and the one contract of shard events (:mod:`.sink`)."""
