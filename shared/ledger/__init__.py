"""The run ledger: what happened to every job, read from ``conveyor.runs`` and the ``conveyor.jobs`` view.

``status`` names the states a job can be in, ``read`` answers "what happened to job X" and lists runs newest first,
``retention`` deletes finished rows once nobody needs them.
"""
