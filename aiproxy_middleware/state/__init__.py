"""State shared between workers: limit counters and quota balances, in this process or in Redis."""
