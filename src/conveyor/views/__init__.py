"""Read models: what the API, the CLI and the web UI show, read from the store.

Above the engine (they use its vocabulary: statuses, versions, incident descriptions) and below
the server and the CLI, which only present them. Nothing here writes.
"""
