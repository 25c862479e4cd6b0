"""The Slack front door: signed Events API and slash-command requests in, replies out
through Slack's Web API. See docs/user-agents.md, "Slack"."""
