"""The demo: a tours-and-activities inventory on four simulated shards, and
the shard simulator the tests use to produce every failure for real."""
