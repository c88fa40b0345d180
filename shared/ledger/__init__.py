"""The run ledger: what happened to every job, in PostgreSQL.

``conveyor.runs`` follows each published job from its publish to its end; the view ``conveyor.jobs`` adds the jobs
still in the outbox, so one query answers "what happened to job X" wherever the job is. One concept per module:
:mod:`~shared.ledger.record` is what the handler runtime writes (a start statement and an outcome statement per
batch); :mod:`~shared.ledger.cancel` stops a job that has not started; :mod:`~shared.ledger.flows` enqueues a parent
that runs after its children and reads those children back; :mod:`~shared.ledger.read` and
:mod:`~shared.ledger.retention` read and prune it. Rules that SQL producers share live in SQL (migrations 0003-0005).
"""
