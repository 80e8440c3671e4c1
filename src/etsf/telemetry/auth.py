"""HTTP basic auth whose cost a failing client cannot raise: verified credentials are cached,
password hashes are computed only within a budget.

Every request that carries credentials ends in one of three ways:

* its (user, password) pair is in a cache (keyed by HMAC-SHA256 under a per-process random
  key, so the cache holds no password): answered from the cache, no hash;
* the pair is new and both the global and the source's hash budget have a token left: one
  password hash is computed (bcrypt; an unknown user is checked against a dummy hash of the
  same cost, inside the same budget, so it answers like a wrong password);
* otherwise it is refused (429) without a hash.

Budgets are token buckets of hash computations: globally ``GLOBAL_BURST`` plus
``GLOBAL_RATE`` per second, per source address (IPv4 address, IPv6 /64) ``SOURCE_BURST``
plus ``SOURCE_RATE`` per second.  Over any interval of T seconds at most
``GLOBAL_BURST + GLOBAL_RATE * T`` hashes are computed, whatever the clients send.  Because
``GLOBAL_BURST > SOURCE_BURST`` and ``GLOBAL_RATE >= SOURCE_RATE``, one source alone can
never empty the global bucket: another client still finds ``GLOBAL_BURST - SOURCE_BURST``
tokens for its first login, and a client whose credentials were verified once needs none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import threading
import time
from collections import OrderedDict

GLOBAL_BURST = 4
GLOBAL_RATE = 1.0
SOURCE_BURST = 2
SOURCE_RATE = 0.5
#: bounded tables: verified pairs, refused pairs, per-source buckets
OK_CACHE_MAX = 64
FAIL_CACHE_MAX = 4096
SOURCES_MAX = 4096
#: bcrypt uses the first 72 bytes only; a longer password is refused without a hash
BCRYPT_PASSWORD_MAX = 72


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "t")

    def __init__(self, burst: float, rate: float, now: float):
        self.burst, self.rate, self.tokens, self.t = burst, rate, float(burst), now

    def refill(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        return self.tokens


def source_key(addr: str) -> str:
    """The address a source's budget is kept for: the IPv4 address (also when IPv4-mapped),
    the /64 of an IPv6 address (one host holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _pbkdf2_check(password: str, encoded: str) -> bool:
    try:
        algo, it, salt, want = encoded.split("$")
        if algo != "pbkdf2_sha256":
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(it))
        return hmac.compare_digest(base64.b64encode(dk).decode(), want)
    except (ValueError, TypeError):
        return False


def _bcrypt_check(password: str, encoded: str) -> bool:
    import bcrypt  # pylint: disable=import-outside-toplevel
    try:
        return bcrypt.checkpw(password.encode(), encoded.encode())
    except ValueError:
        return False


def verify(password: str, encoded: str) -> bool:
    """One password hash: bcrypt ('$2b$...') or the older 'pbkdf2_sha256$...'."""
    if encoded.startswith("pbkdf2_sha256$"):
        return _pbkdf2_check(password, encoded)
    return _bcrypt_check(password, encoded)


def _dummy_for(users: dict[str, str]) -> str:
    """A hash of the same kind and cost as the first user's, of a random password nobody knows."""
    enc = next(iter(users.values()))
    secret = os.urandom(18).hex()
    if enc.startswith("pbkdf2_sha256$"):
        it = int(enc.split("$")[1])
        salt = os.urandom(16)
        dk = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, it)
        return f"pbkdf2_sha256${it}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"
    import bcrypt  # pylint: disable=import-outside-toplevel
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(int(enc[4:6]), prefix=b"2b")).decode()


class Authenticator:
    """Decides one request's credentials; thread-safe.  Counters feed /metrics."""

    def __init__(self, users: dict[str, str], clock=time.monotonic):
        self.users = dict(users)
        self._clock = clock
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._fail: OrderedDict[bytes, None] = OrderedDict()
        self._global = _Bucket(GLOBAL_BURST, GLOBAL_RATE, clock())
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._dummy = _dummy_for(self.users) if self.users else ""
        self.hashes = 0
        self.cache_hits = 0
        self.rejected = {"budget": 0, "cached": 0, "malformed": 0}

    def _take(self, source: str) -> bool:
        """One token from the global and the source's bucket, or none at all."""
        now = self._clock()
        b = self._sources.get(source)
        if b is None:
            if len(self._sources) >= SOURCES_MAX:
                self._evict(now)
            b = self._sources[source] = _Bucket(SOURCE_BURST, SOURCE_RATE, now)
        else:
            self._sources.move_to_end(source)
        if b.refill(now) < 1 or self._global.refill(now) < 1:
            return False
        b.tokens -= 1
        self._global.tokens -= 1
        return True

    def _evict(self, now: float) -> None:
        """Drop the buckets that refilled (forgetting them changes nothing), else the oldest
        one; the global bucket still bounds the total."""
        full = [k for k, b in self._sources.items() if b.refill(now) >= b.burst]
        for k in full:
            del self._sources[k]
        if not full:
            self._sources.popitem(last=False)

    @staticmethod
    def _remember(cache: OrderedDict, key: bytes, cap: int) -> None:
        cache[key] = None
        cache.move_to_end(key)
        while len(cache) > cap:
            cache.popitem(last=False)

    def check(self, user: str | None, password: str | None, source: str) -> int:
        """200 (accepted), 401 (wrong or malformed credentials) or 429 (a new pair over
        the hash budget).  user None: the Authorization header was missing or unparsable."""
        if user is None or password is None:
            with self._lock:
                self.rejected["malformed"] += 1
            return 401
        pw = password.encode("utf-8", "surrogatepass")
        if len(pw) > BCRYPT_PASSWORD_MAX or b"\0" in pw:
            with self._lock:
                self.rejected["malformed"] += 1
            return 401
        key = hmac.new(self._key, user.encode("utf-8", "surrogatepass") + b"\0" + pw,
                       hashlib.sha256).digest()
        with self._lock:
            if key in self._ok:
                self.cache_hits += 1
                return 200
            if key in self._fail:
                self.rejected["cached"] += 1
                return 401
            if not self._take(source_key(source)):
                self.rejected["budget"] += 1
                return 429
            self.hashes += 1
        ok = verify(password, self.users.get(user, self._dummy)) and user in self.users
        with self._lock:
            self._remember(self._ok if ok else self._fail, key, OK_CACHE_MAX if ok else FAIL_CACHE_MAX)
        return 200 if ok else 401

    def metrics(self):
        """Counter families for the exporter's registry."""
        from prometheus_client.core import CounterMetricFamily  # pylint: disable=import-outside-toplevel
        with self._lock:
            hashes, hits, rej = self.hashes, self.cache_hits, dict(self.rejected)
        c = CounterMetricFamily("etsf_exporter_auth_hashes", "Password hashes computed for "
                                "basic auth (bounded by the hash budget)")
        c.add_metric([], hashes)
        yield c
        c = CounterMetricFamily("etsf_exporter_auth_cache_hits", "Requests accepted from the "
                                "cache of verified credentials (no hash)")
        c.add_metric([], hits)
        yield c
        c = CounterMetricFamily("etsf_exporter_auth_rejected_without_hash", "Requests refused "
                                "without a hash: budget (429), cached (a pair that failed "
                                "before), malformed", labels=["reason"])
        for reason, n in sorted(rej.items()):
            c.add_metric([reason], n)
        yield c
