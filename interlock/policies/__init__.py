"""Policy files (model, loader, engine, limits and budgets) and the PII and secrets guardrails."""
