"""OpenAI-compatible audio endpoints (`/v1/audio/transcriptions`, `/translations`)."""

from service.openai.controllers import openai_router

__all__ = ["openai_router"]
