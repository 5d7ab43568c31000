"""Test doubles: a stub OpenAI backend, a fake engine for predictors, gateway test helpers. Never imported by runtime code."""
