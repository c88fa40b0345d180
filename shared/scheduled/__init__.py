"""Scheduled jobs: what one fire of a schedule does.

``policy`` is the pure part (the per-job policies and when a fire counts as missed) and imports nothing that needs
a database, so the registry can use its types. ``fire`` is the database part (claim the period under a per-job lock,
check overlap, the enable flag and the job's pre-check, then enqueue or record why not), shared by the Lambda
schedule target and the local scheduler. This module imports neither, so importing ``shared.scheduled.policy``
never loads psycopg.
"""
