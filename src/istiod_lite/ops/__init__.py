"""The ops room: reads and reports (HTTP debug endpoints, logs, status, metrics). Never changes config."""
