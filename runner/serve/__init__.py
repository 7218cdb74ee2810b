"""`opsrun serve`: the HTTP face of runner.service (FastAPI + uvicorn), the gateway's OpenAI face, MCP at /mcp.
Must not import fastapi itself (app and the route modules do), nor runner.cli; runner.mcp only as runner.mcp.http.

    config.py   serve.yaml: tokens (env:/file:), roles, limits    limits.py  body size (413), token bucket (429)
    auth.py     bearer tokens -> Principal, role dependencies      problems.py errors as problem documents
    models.py   request/response bodies (pydantic)                 routes.py  validate, plans, approvals, runs
    jobs.py     jobs and their server-sent events                  openai.py  /v1/chat/completions, /v1/models
    app.py      create_app: the app, its lifespan (job worker), OpenAPI
"""
