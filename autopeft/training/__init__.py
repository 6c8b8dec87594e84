"""Training one adapter cheaply: the loop with its hooks (what strategies and adapters plug
into), what a trial measures while it trains, and fault injection for tests."""
