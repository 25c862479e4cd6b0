"""Who is calling: the operator, or one user (token, OIDC JWT or Slack), and what each
may see. See docs/user-agents.md, "Identity"."""
