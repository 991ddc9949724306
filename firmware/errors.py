"""Errors a caller can fix by changing the request (as opposed to faults of the box or its peers)."""


class InvalidRequest(ValueError):
    """The request is malformed or asks for something the box does not offer."""
