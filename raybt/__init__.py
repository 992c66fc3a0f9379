"""raybt: vectorized trading backtests in parallel on Ray."""
