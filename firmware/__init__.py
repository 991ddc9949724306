"""The E-signature Box's firmware: the signing API service and the application layer beneath the faces.

Its subpackages name their public API in ``__all__``: ``operations`` (the application layer the
faces call), ``signing`` (the services), ``store`` (SQLite state), ``api`` and ``csc`` (the HTTP
faces), ``devpki`` and ``agent``. It never imports the other faces (``webui``, ``provisioning``).
"""

__all__: list[str] = []  # nothing at the top: import the subpackage or module that holds the name
