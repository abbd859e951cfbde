"""Serving: the model pool shared by the HTTP (OpenAI-compatible) and MCP faces."""
