"""The webhook service: FastAPI app (webhooks, JSON API, health) and its worker."""
