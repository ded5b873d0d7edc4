"""availability: a Redis-backed shared cache of betting-market availability."""
