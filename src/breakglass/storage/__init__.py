"""Storage adapters: SQLAlchemy tables, repositories and the unit of work."""
