"""The embedded default engine: a real vLLM on this machine's CPU with Qwen2.5-Coder-0.5B-Instruct."""
