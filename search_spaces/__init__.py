"""The search-space presets; installed as ``autopeft.search_spaces`` (``autopeft spaces`` lists them)."""
