"""The MCP face of opsrun (official `mcp` SDK): tools and resources over runner.service, served
on stdio (`opsrun mcp`) and streamable HTTP (runner.mcp.http, mounted by `opsrun serve`).

Imports the `mcp` SDK only in its submodules: importing this package loads nothing heavy.
"""
