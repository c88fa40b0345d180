"""The run ledger: what happened to every job, in PostgreSQL.

``conveyor.runs`` follows each published job from its publish to its end; the view ``conveyor.jobs`` adds the jobs
still in the outbox, so one query answers "what happened to job X" wherever the job is. ``record`` is what the
handler runtime writes (a start statement and an outcome statement per batch); the other modules read, cancel and
prune it.
"""
