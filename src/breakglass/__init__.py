"""breakglass: emergency access broker for cloud AI operations."""

__version__ = "0.1.0"
