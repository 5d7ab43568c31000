"""The OpenAI-compatible scheduling proxy in front of one or more engines."""
