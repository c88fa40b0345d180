"""The run ledger (``conveyor.runs``) seen from Python: operations on jobs that are already enqueued.

One concept per module: :mod:`shared.ledger.cancel` stops a job that has not started; :mod:`shared.ledger.flows`
enqueues a parent job that runs after its children and reads those children back. The rules themselves live in
SQL (migration 0004) so that SQL callers and Python callers get the same behaviour.
"""
