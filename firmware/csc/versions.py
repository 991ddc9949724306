"""The two CSC API versions the box speaks, and the request fields whose names differ between them."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "/csc/"  # every CSC route, and only CSC routes, starts here: its errors take CSC's shape


@dataclass(frozen=True)
class CscVersion:
    name: str  # the path segment: /csc/<name>/
    specs: str  # what `info` reports
    hashes_field: str  # the list of base64 digests in credentials/authorize and signatures/signHash
    hash_algo_field: str  # the digest algorithm OID beside it

    @property
    def root(self) -> str:
        """The path every method of this version hangs under, without a trailing slash."""
        return f"{PREFIX}{self.name}"

    @property
    def is_v1(self) -> bool:
        return self.name == "v1"


V1 = CscVersion("v1", "1.0.4.0", "hash", "hashAlgo")  # what pyHanko's CSCSigner speaks
V2 = CscVersion("v2", "2.0.0.2", "hashes", "hashAlgorithmOID")
