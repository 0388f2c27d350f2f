"""Executors that run a Plan somewhere other than this host.

``argo`` submits the rendered Workflow to Argo Workflows through the official
``kubernetes`` client (the only module that imports it), follows it with one
list-then-watch loop per namespace, maps node phases to stage statuses and
stops superseded runs with ``spec.shutdown: Terminate``.
"""
