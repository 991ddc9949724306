"""The certificate directory for mail clients over LDAP and LDAPS (issue 11).

Debian's slapd serves the protocol (slapd.py); its sock backend forwards every search to a Unix
socket the box answers (responder.py) from the published certificates, through the
`PublishedCertificates` seam: one exact ``(mail=…)`` equality finds an address's certificates,
anything else finds nothing.
"""

from .responder import BRANCH, SUFFIX, LdapError, PublishedCertificates, Responder
from .slapd import LdapServer, render_conf, urls

__all__ = ["BRANCH", "SUFFIX", "LdapError", "LdapServer", "PublishedCertificates", "Responder", "render_conf",
           "urls"]
