"""policy.services: validation errors name the field path in one line;
canonical form; Maglev table properties (pure Python, no kernel)."""
import pytest

from etsf import fastpath
from etsf import layout as L
from etsf import policy as P

GOOD = """\
version: 1
services:
  - name: sip-proxy
    vip: 198.18.32.100
    port: 5060
    protocol: udp
    affinity: call-id
    backends:
      - {address: 198.18.31.13, port: 5060, weight: 2}
      - {address: 198.18.31.11}
  - name: v6
    vip: "2001:db8:5::100"
    port: 5060
    backends:
      - {address: "2001:db8:2::11", port: 5070}
"""


def _svc(**over):
    base = {"name": "s", "vip": "198.18.32.100", "port": 5060,
            "backends": [{"address": "198.18.31.11"}]}
    base.update(over)
    return base


def _doc(*svcs):
    import yaml
    return yaml.safe_dump({"version": 1, "services": list(svcs)})


INVALID = [
    ("not_list", "version: 1\nservices: {a: 1}\n",
     "policy.services: a list of 0..16 services expected (got a mapping)"),
    ("unknown_key", _doc(_svc(color="red")),
     "policy.services[0].color: one of the keys name, vip, port, protocol, backends, affinity"),
    ("no_vip", _doc({k: v for k, v in _svc().items() if k != "vip"}),
     "policy.services[0].vip: a unicast IPv4/IPv6 address expected (got nothing)"),
    ("bad_vip", _doc(_svc(vip="198.18.300.1")),
     "policy.services[0].vip: a unicast IPv4/IPv6 address expected (got '198.18.300.1')"),
    ("bad_port", _doc(_svc(port=0)), "policy.services[0].port: an integer 1..65535 expected (got 0)"),
    ("bad_proto", _doc(_svc(protocol="sctp")), "policy.services[0].protocol: one of udp, tcp expected (got 'sctp')"),
    ("bad_affinity", _doc(_svc(affinity="source-ip")),
     "policy.services[0].affinity: call-id expected (got 'source-ip')"),
    ("bad_name", _doc(_svc(name="has space")),
     "policy.services[0].name: a name of 1..31 characters [A-Za-z0-9_.-] starting with a letter"),
    ("dup_name", _doc(_svc(), _svc(vip="198.18.32.101", backends=[{"address": "198.18.31.12"}])),
     "policy.services[1].name: no duplicate of policy.services[0].name expected (got 's')"),
    ("dup_vip", _doc(_svc(), _svc(name="t", backends=[{"address": "198.18.31.12"}])),
     "policy.services[1].vip: a VIP:port/protocol other than policy.services[0]'s"),
    ("no_backends", _doc(_svc(backends=[])),
     "policy.services[0].backends: a list of 1 or more backends expected (got a list of 0)"),
    ("family_mix", _doc(_svc(backends=[{"address": "2001:db8::1"}])),
     "policy.services[0].backends[0].address: an IPv4 address like the service vip expected"),
    ("weight", _doc(_svc(backends=[{"address": "198.18.31.11", "weight": 0}])),
     "policy.services[0].backends[0].weight: an integer 1..1000 expected (got 0)"),
    ("backend_port", _doc(_svc(backends=[{"address": "198.18.31.11", "port": 70000}])),
     "policy.services[0].backends[0].port: an integer 1..65535 expected (got 70000)"),
    ("shared_backend", _doc(_svc(), _svc(name="t", vip="198.18.32.101")),
     "policy.services[1].backends[0].address: an address:port not already a backend of"),
    ("vip_is_backend", _doc(_svc(backends=[{"address": "198.18.32.100"}])),
     "policy.services[0].backends[0].address: an address other than the service vip expected"),
    ("too_many", _doc(*[_svc(name=f"s{i}", vip=f"198.18.32.{i + 1}",
                             backends=[{"address": f"198.18.33.{i + 1}"}]) for i in range(17)]),
     "policy.services: a list of 0..16 services expected (got a list of 17)"),
]


@pytest.mark.parametrize("name,text,expected", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_services_one_line_error(name, text, expected):
    with pytest.raises(P.PolicyError) as ei:
        P.load_text(text)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(expected), msg
    assert msg.split(":", 1)[0] == ei.value.path


def test_services_canonical_and_defaults():
    d = P.load_text(GOOD).to_dict()
    s = d["services"]
    assert [x["name"] for x in s] == ["sip-proxy", "v6"]
    assert s[0]["backends"] == [{"address": "198.18.31.11", "port": 5060, "weight": 1},
                                {"address": "198.18.31.13", "port": 5060, "weight": 2}]
    assert s[1] == {"name": "v6", "vip": "2001:db8:5::100", "port": 5060, "protocol": "udp",
                    "affinity": "call-id",
                    "backends": [{"address": "2001:db8:2::11", "port": 5070, "weight": 1}]}
    assert "services" not in P.load_text("version: 1\n").to_dict()     # old policies unchanged
    ch = P.diff(P.load_text("version: 1\n").to_dict(), d)
    assert [c["path"] for c in ch] == ["services"]


def test_maglev_table_complete_and_deterministic():
    a = fastpath.maglev([("x|5060", 1), ("y|5060", 1), ("z|5060", 1)])
    assert a == fastpath.maglev([("x|5060", 1), ("y|5060", 1), ("z|5060", 1)])
    assert len(a) == L.FP_RING and min(a) == 0 and max(a) == 2
    assert fastpath.maglev([]) == [L.FP_NONE] * L.FP_RING


def test_svc_key_layout():
    k = L.FpSvcKey.from_bytes(fastpath.svc_key(1, "198.18.32.100", 5060, "udp"))
    assert (k.slot, k.family, k.proto, k.port) == (1, 4, 17, 5060)
    assert bytes(k.addr)[:4] == bytes([198, 18, 32, 100]) and not any(bytes(k.addr)[4:])
