"""The data layer: raw daily series in, immutable dataset versions out, labels, splits and samples.

    series.py    read and validate CSV / parquet bars, fetch from yfinance
    synth.py     a seeded synthetic market (GARCH volatility clustering) for tests and demos
    registry.py  the `series` and `datasets` tables: versioned, hashed content stored in PostgreSQL
    features.py  tier a25 (OHLCV + 20 TA-Lib indicators) and tier vix8
    labels.py    the threshold label, from raw prices
    splits.py    date splits with strict containment
    samples.py   (features, labels, per-split positions) for a horizon: what training consumes

May import `store` and `errors` only (the commands are coordinator/commands/data.py).
"""
