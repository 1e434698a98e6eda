//! Handler tests without a browser: see `tests/` for the scenarios.
