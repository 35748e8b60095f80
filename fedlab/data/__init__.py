"""Data in: reading check-in files, the synthetic city, categories, features and per-client sequences."""
