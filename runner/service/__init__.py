"""The use cases the faces share (the CLI's approve/plans/jobs, `opsrun serve`, `opsrun mcp`):
project, read-only ops, plan store, approvals, audit log, job queue and worker. Imports no cli/serve/mcp.
"""
