"""`opsrun serve`: the HTTP face of runner.service (FastAPI: the typed routes give the OpenAPI 3.1
document), the gateway's OpenAI-compatible /v1 face, MCP mounted at /mcp. Imports runner.service
and below (runner.mcp.http only to mount it); fastapi/uvicorn only in app and the route modules.

    config.py   serve.yaml: tokens (env:/file:), roles, limits    limits.py  body size (413), token bucket (429)
    auth.py     bearer tokens -> Principal, role dependencies      problems.py errors as problem documents
    models.py   request/response bodies (pydantic)                 routes.py  validate, plans, approvals, runs
    jobs.py     jobs and their server-sent events                  openai.py  /v1/chat/completions, /v1/models
    app.py      create_app: the app, its lifespan (job worker), OpenAPI
"""
