"""The local stack: Dapr control plane, model server, LiteLLM proxy and the app."""
