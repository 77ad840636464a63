"""One thin Celery task module per job kind: load, claim, call the pure ML code, store, finish."""
