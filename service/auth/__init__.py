"""Who is calling: API keys, the bearer-token middleware, the admin guard and per-key limits."""
