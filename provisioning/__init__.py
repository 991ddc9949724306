"""USB-stick provisioning of an E-signature Box: signed, declarative bundles (issue 5).

A fresh box is set up, and a running one re-configured, by a bundle on a USB stick labelled
``ESIGNBOX``: a manifest (box name, network settings, admin console set-up code, TSA/OCSP/CRL
URLs, API clients, trusted CA roots, an issued certificate chain, a key-generation request) plus
the files it names, signed by the administrator's provisioning key. The box trusts exactly one
provisioning public key, built into its image or enrolled first; an unsigned, tampered, expired,
replayed or foreign bundle is refused, and the reason is logged, put in the audit log and written
back to the stick.

Modules, in the order a bundle meets them:

- `keys`      the provisioning key pair (Ed25519 or ECDSA P-256) and the box's trusted key
- `enrol`     the first key from a stick, with the set-up code on the box's screen (trust on first use)
- `bundle`    the format, the digest list the signature covers, copying off a stick with limits
- `manifest`  the declarative content, validated field by field
- `verify`    signature, binding to this box, replay counter, expiry
- `apply`     token work (key + CSR, chain check), then an atomic switch of configuration generations
              (a reset bundle goes to firmware/operations/reset.py instead)
- `state`     generations, the commit record in box.db, the journal and crash recovery
- `report`    the report written to the stick
- `usb`       the pyudev watcher and the read-only, nosuid/nodev/noexec mount
- `service`   one attempt from copy to report (used by `provision apply` and by the watcher)
- `cli`       `esignbox provision …`

Nothing on a stick is ever executed: a bundle is data, and the code that reads it accepts only
plain files with plain names. See README.md in this directory for the format and operations.
"""

from .cli import add_parser as add_commands
from .errors import ProvisioningRefused

__all__ = ["ProvisioningRefused", "add_commands"]
