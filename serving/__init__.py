"""Serving: the vLLM process, adapter hot-loading, the chat client and the OpenAI-compatible API."""
