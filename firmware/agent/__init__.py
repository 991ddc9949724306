"""The e-Signing Agent: PDF signing next to the business system, with only hashes sent to the box."""

from .local import AgentError, sign_pdf_locally

__all__ = ["AgentError", "sign_pdf_locally"]
