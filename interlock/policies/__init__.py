"""Policy files (model, loader, CEL, engine), limits, budgets and counters, and the shared state they stand on
(the guardrails are `interlock/guardrails/`)."""
