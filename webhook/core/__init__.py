"""The pure core: every decision, as functions over plain data. Nothing here does I/O beyond reading
the package's own data files, and nothing imports webhook.adapters."""
