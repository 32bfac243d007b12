"""``/mcp``: JSON-RPC 2.0 as OpenEnv serves it. Environments here expose no MCP tools yet,
so ``tools/list`` is empty and ``tools/call`` says which tool was not found."""

from __future__ import annotations

from typing import Any

import orjson

import stratagem
from stratagem.envs.spec import EnvSpec
from stratagem.server.protocol import JsonRpc

MCP_PROTOCOL_VERSION = "2025-06-18"


def _error(code: int, message: str, request_id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


def handle(request: Any, spec: EnvSpec) -> dict[str, Any]:
    """One JSON-RPC request object in, one response object out; never raises."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        rid = request.get("id") if isinstance(request, dict) else None
        return _error(
            JsonRpc.INVALID_REQUEST,
            "Invalid Request: expected an object with jsonrpc='2.0' and a string 'method'",
            rid if isinstance(rid, (str, int)) else None,
        )
    rid, method, params = request.get("id"), request["method"], request.get("params", {})
    if not isinstance(params, dict):
        return _error(JsonRpc.INVALID_PARAMS, "Invalid params: 'params' must be an object", rid)
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": f"stratagem-{spec.name}", "version": stratagem.__version__},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": []}
    elif method == "tools/call":
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return _error(JsonRpc.INVALID_PARAMS, "Invalid params: tools/call needs a string 'name'", rid)
        return _error(JsonRpc.INVALID_PARAMS, f"Tool not found: {name!r} (this environment exposes no tools)", rid)
    else:
        return _error(
            JsonRpc.METHOD_NOT_FOUND,
            f"Method not found: {method!r}; supported: initialize, ping, tools/list, tools/call",
            rid,
        )
    return {"jsonrpc": "2.0", "result": result, "id": rid}


def handle_raw(body: bytes, spec: EnvSpec) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(JsonRpc.PARSE_ERROR, f"Parse error: {exc}")
    return handle(request, spec)
