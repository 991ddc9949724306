"""The HTTP API: Falcon resources that parse, call a service, and serialise. No signing logic here."""
