"""Operating a running system: queue stats, the runs list and detail, retry, redrive, cancel, trigger, pause/resume and
health, under the scopes ``jobs:read``, ``jobs:retry`` and ``jobs:cancel``, every action audited.

:mod:`shared.operations.service` is the one implementation; :mod:`shared.operations.api` serves it over HTTP (in the
ops Lambda, and under ``conveyor dev``) with the dashboard page beside it, and ``conveyor <verb>`` calls it directly.
"""
