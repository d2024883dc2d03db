"""PostgreSQL access: declarative models and async engine/session helpers."""
