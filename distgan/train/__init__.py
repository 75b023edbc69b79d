"""Training on Ray Train: ``launch`` (driver), ``worker`` (every rank), ``loop`` (no Ray)."""
