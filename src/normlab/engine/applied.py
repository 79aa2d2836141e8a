"""What ``runtime.configure`` chose in this process: a leaf module, so a result's provenance can say it without
importing the engine (which imports the experiments that write provenance)."""

engine: dict | None = None


def describe() -> dict:
    return engine or {"source": "not configured (XLA's defaults)"}
