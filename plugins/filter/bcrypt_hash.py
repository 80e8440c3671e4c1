# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bcrypt hash of a password with a salt derived from a seed, so re-running a play writes the same hash."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bcrypt_hash
author: eTSF developers
version_added: "0.1.0"
short_description: bcrypt hash of a password, the same on every run
description:
  - Returns the bcrypt hash (C($2b$)) of the input password, as the web configuration of
    Prometheus exporters expects in C(basic_auth_users).
  - The 16-byte salt is taken from the SHA-256 of O(seed) (for example the host and user
    name), so the hash, and the file it is written to, only change when the password does.
  - Runs on the controller and needs the Python C(bcrypt) module there (Ansible's
    C(password_hash) needs passlib, which is not installed with ansible-core).
positional: seed, cost
options:
  _input:
    description: The plaintext password (at most 72 bytes, no NUL byte).
    type: str
    required: true
  seed:
    description: Text the salt is derived from; use a different one per host and user.
    type: str
    required: true
  cost:
    description: bcrypt cost (4..12; every check of the password costs 2**cost rounds).
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Hash the exporter's basic auth password for this host
  ansible.builtin.set_fact:
    hashed: "{{ vault_prometheus_password | etsf.sip.bcrypt_hash(inventory_hostname ~ ':prometheus') }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The hash, C($2b$<cost>$<22 salt characters><31 hash characters>).
  type: str
"""

import base64
import hashlib

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes, to_native

try:
    import bcrypt
    HAS_BCRYPT = True
except ImportError:
    HAS_BCRYPT = False

_STD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_hash(password, seed, cost=10):
    if not HAS_BCRYPT:
        raise AnsibleFilterError("bcrypt_hash: the Python bcrypt module expected on the controller "
                                 "(pip install bcrypt, or apt install python3-bcrypt)")
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("bcrypt_hash: a non-empty password string expected")
    pw = to_bytes(password, errors="surrogate_or_strict")
    if len(pw) > 72 or b"\0" in pw:
        raise AnsibleFilterError(f"bcrypt_hash: a password of at most 72 bytes without NUL expected "
                                 f"(got {len(pw)} bytes)")
    try:
        cost = int(cost)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"bcrypt_hash: cost 4..12 expected (got {cost!r})") from None
    if not 4 <= cost <= 12:
        raise AnsibleFilterError(f"bcrypt_hash: cost 4..12 expected (got {cost})")
    # bcrypt's base64 is the standard bit order in another alphabet; 16 bytes -> 22 characters
    raw = hashlib.sha256(to_bytes(seed, errors="surrogate_or_strict")).digest()[:16]
    salt = base64.b64encode(raw).rstrip(b"=").translate(bytes.maketrans(_STD, _BCRYPT))
    return to_native(bcrypt.hashpw(pw, b"$2b$%02d$" % cost + salt))


class FilterModule:
    def filters(self):
        return {"bcrypt_hash": bcrypt_hash}
