"""The Cloud Signature Consortium remote-signing API (v1.0.4 and v2.0) in front of the box's key.

CSC clients log in with their API key for a short-lived access token, ask ``credentials/authorize``
for a SAD bound to the exact hashes they will sign, and trade the SAD for raw signatures
(``signHash``) or, in v2, for CMS signatures made by the box's hash-signing service (``signDoc``).
"""
