"""Policy fixtures shared by unit and integration tests (FULL example, INVALID cases)."""

FULL = """\
version: 1
sip_ports: [5060, 5080]
tls_ports: [5061]
trust:
  - 198.18.10.0/24
  - "2001:db8:10::/48"
deny:
  - 198.18.66.0/24
  - 198.18.67.7
rate_limits:
  register: {rate: 10, burst: 20}
  options:  {rate: 5}
  invite:   {rate: 50, burst: 100}
  other:    {rate: 0}
aggregation: {ipv4_prefix: 24, ipv6_prefix: 56}
priorities:
  INVITE: critical
  message: low
overload:
  level: 1
  shed_below: [low, normal, high, critical]
marking: {enabled: true, dscp: AF31, skb_priority: 6}
deadman: {timeout_ms: 5000}
"""

# (name, yaml, expected error prefix "path: ...")
INVALID = [
    ("wrong version", "version: 2\n", "policy.version: 1 expected (got 2)"),
    ("missing version", "sip_ports: [5060]\n", "policy.version: 1 expected (got nothing)"),
    ("version as string", "version: '1'\n", "policy.version: 1 expected (got '1')"),
    ("version as float", "version: 1.0\n", "policy.version: 1 expected (got 1.0)"),
    ("unknown top key", "version: 1\nfoo: 1\n",
     "policy.foo: one of the keys version, sip_ports, tls_ports, trust, deny, rate_limits,"),
    ("not a mapping", "- 1\n- 2\n", "policy: a mapping expected (got a list of 2)"),
    ("empty document", "", "policy: a mapping with version: 1 expected (got null)"),
    ("bad yaml", "version: 1\nsip_ports: [5060\n", "policy: invalid YAML"),
    ("duplicate key", "version: 1\nsip_ports: [5060]\nsip_ports: [5061]\n", "policy: invalid YAML"),
    ("bad CIDR", "version: 1\ntrust: [198.18.0.0/33]\n",
     "policy.trust[0]: an IPv4/IPv6 network expected (got '198.18.0.0/33')"),
    ("CIDR garbage", "version: 1\ndeny: [1.2.3.4, not-an-ip]\n",
     "policy.deny[1]: an IPv4/IPv6 network expected (got 'not-an-ip')"),
    ("host bits", "version: 1\ntrust: [198.18.0.1/24]\n",
     "policy.trust[0]: a network without host bits (198.18.0.0/24) expected (got '198.18.0.1/24')"),
    ("trust+deny same prefix", "version: 1\ntrust: [198.18.5.0/24]\ndeny: [198.18.5.0/24]\n",
     "policy.deny[0]: a prefix other than trust[0] expected (got '198.18.5.0/24')"),
    ("duplicate CIDR", "version: 1\ndeny: [198.18.5.0/24, 198.18.5.0/24]\n",
     "policy.deny[1]: no duplicate of policy.deny[0] expected (got '198.18.5.0/24')"),
    ("trust not a list", "version: 1\ntrust: 198.18.0.0/24\n",
     "policy.trust: a list or null expected (got '198.18.0.0/24')"),
    ("negative rate", "version: 1\nrate_limits: {register: {rate: -5}}\n",
     "policy.rate_limits.register.rate: an integer 0..4294967295 expected (got -5)"),
    ("rate not int", "version: 1\nrate_limits: {invite: {rate: fast}}\n",
     "policy.rate_limits.invite.rate: an integer 0..4294967295 expected (got 'fast')"),
    ("rate is bool", "version: 1\nrate_limits: {invite: {rate: true}}\n",
     "policy.rate_limits.invite.rate: an integer 0..4294967295 expected (got true)"),
    ("zero burst", "version: 1\nrate_limits: {register: {rate: 5, burst: 0}}\n",
     "policy.rate_limits.register.burst: an integer 1..4294967295 expected (got 0)"),
    ("missing rate", "version: 1\nrate_limits: {register: {burst: 5}}\n",
     "policy.rate_limits.register.rate: an integer 0..4294967295 expected (got nothing)"),
    ("unknown rl class", "version: 1\nrate_limits: {subscribe: {rate: 1}}\n",
     "policy.rate_limits.subscribe: one of the keys register, options, invite, other expected"),
    ("unknown rl key", "version: 1\nrate_limits: {register: {rate: 1, brust: 3}}\n",
     "policy.rate_limits.register.brust: one of the keys rate, burst expected (got 'brust')"),
    ("unknown method", "version: 1\npriorities: {INVIT: high}\n",
     "policy.priorities.INVIT: one of the SIP methods INVITE, ACK, BYE, CANCEL, REGISTER,"),
    ("bad priority", "version: 1\npriorities: {INVITE: urgent}\n",
     "policy.priorities.INVITE: one of low, normal, high, critical (or 0..3) expected (got 'urgent')"),
    ("port zero", "version: 1\nsip_ports: [0]\n", "policy.sip_ports[0]: an integer 1..65535 expected (got 0)"),
    ("port too big", "version: 1\nsip_ports: [5060, 70000]\n",
     "policy.sip_ports[1]: an integer 1..65535 expected (got 70000)"),
    ("too many ports", "version: 1\nsip_ports: [1,2,3,4,5,6,7,8,9]\n",
     "policy.sip_ports: a list of 1..8 ports expected (got a list of 9)"),
    ("no sip ports", "version: 1\nsip_ports: []\n",
     "policy.sip_ports: a list of 1..8 ports expected (got a list of 0)"),
    ("duplicate port", "version: 1\nsip_ports: [5060, 5060]\n",
     "policy.sip_ports[1]: no duplicate of policy.sip_ports[0] expected (got 5060)"),
    ("tls overlaps sip", "version: 1\nsip_ports: [5060]\ntls_ports: [5060]\n",
     "policy.tls_ports[0]: a port not in sip_ports expected (got 5060)"),
    ("v4 prefix 0", "version: 1\naggregation: {ipv4_prefix: 0}\n",
     "policy.aggregation.ipv4_prefix: an integer 1..32 expected (got 0)"),
    ("v6 prefix 129", "version: 1\naggregation: {ipv6_prefix: 129}\n",
     "policy.aggregation.ipv6_prefix: an integer 1..128 expected (got 129)"),
    ("overload level 4", "version: 1\noverload: {level: 4}\n",
     "policy.overload.level: null or an integer 0..3 expected (got 4)"),
    ("shed_below length", "version: 1\noverload: {shed_below: [low, high]}\n",
     "policy.overload.shed_below: a list of exactly 4 priority classes expected (got a list of 2)"),
    ("shed_below decreasing", "version: 1\noverload: {shed_below: [low, high, normal, critical]}\n",
     "policy.overload.shed_below[2]: a class no lower than level 1's (high) expected (got 'normal')"),
    ("bad dscp name", "version: 1\nmarking: {dscp: XX9}\n",
     "policy.marking.dscp: a DSCP name (CS0..CS7, EF, VA, LE, AF11..AF43, DF, BE) or an integer"),
    ("dscp 64", "version: 1\nmarking: {dscp: 64}\n",
     "policy.marking.dscp: a DSCP name (CS0..CS7, EF, VA, LE, AF11..AF43, DF, BE) or an integer"),
    ("marking enabled not bool", "version: 1\nmarking: {enabled: maybe}\n",
     "policy.marking.enabled: true or false expected (got 'maybe')"),
    ("negative deadman", "version: 1\ndeadman: {timeout_ms: -1}\n",
     "policy.deadman.timeout_ms: an integer 0..86400000 expected (got -1)"),
    ("telemetry not a boolean", "version: 1\ntelemetry: {transactions: 'no'}\n",
     "policy.telemetry.transactions: true or false expected (got 'no')"),
    ("rate_limits not mapping", "version: 1\nrate_limits: [1, 2]\n",
     "policy.rate_limits: a mapping or null expected (got a list of 2)"),
    ("deny everything IPv4", "version: 1\ndeny: [198.18.66.0/24, 0.0.0.0/0]\n",
     "policy.deny[1]: a prefix of /8 or longer (the IPv4 minimum: a shorter one drops SIP from"),
    ("deny everything IPv6", "version: 1\ndeny: ['::/0']\n",
     "policy.deny[0]: a prefix of /16 or longer (the IPv6 minimum: a shorter one drops SIP from"),
    ("trust everything IPv4", "version: 1\ntrust: [0.0.0.0/1]\n",
     "policy.trust[0]: a prefix of /8 or longer (the IPv4 minimum: a shorter one lifts every"),
    ("trust everything IPv6", "version: 1\ntrust: ['2000::/3']\n",
     "policy.trust[0]: a prefix of /16 or longer (the IPv6 minimum: a shorter one lifts every"),
    ("deny shorter than raised minimum", "version: 1\nacl_guard: {ipv4_min_prefix: 16}\ndeny: [198.0.0.0/8]\n",
     "policy.deny[0]: a prefix of /16 or longer (the IPv4 minimum: a shorter one drops SIP from"),
    ("scoped IPv6 deny", "version: 1\ndeny: ['fe80::1%eth0/128']\n",
     "policy.deny[0]: an unscoped IPv4/IPv6 network (the maps cannot hold a %zone) expected"),
    ("scoped IPv6 trust", "version: 1\ntrust: ['fe80::%lo/64']\n",
     "policy.trust[0]: an unscoped IPv4/IPv6 network (the maps cannot hold a %zone)"),
    ("acl_guard minimum out of range", "version: 1\nacl_guard: {ipv6_min_prefix: 129}\n",
     "policy.acl_guard.ipv6_min_prefix: an integer 0..128 expected (got 129)"),
    ("acl_guard allow_broad not bool", "version: 1\nacl_guard: {allow_broad: 'yes'}\n",
     "policy.acl_guard.allow_broad: true or false expected (got 'yes')"),
    ("acl_guard unknown key", "version: 1\nacl_guard: {allow: true}\n",
     "policy.acl_guard.allow: one of the keys ipv4_min_prefix, ipv6_min_prefix, allow_broad"),
    ("keepalive enabled without identities", "version: 1\nkeepalive: {enabled: true}\n",
     "policy.keepalive.identities: at least one identity when keepalive.enabled is true expected"),
    ("keepalive identity with a space", "version: 1\nkeepalive: {identities: ['sbc example.com']}\n",
     "policy.keepalive.identities[0]: [user@]host with an IPv4/IPv6 address or a DNS name as host expected "
     "(got 'sbc example.com')"),
    ("keepalive identity bad user", "version: 1\nkeepalive: {identities: ['a b@sbc.example.com']}\n",
     "policy.keepalive.identities[0]: a SIP user part of 1..32 unreserved characters before '@' expected"),
    ("keepalive identity scoped", "version: 1\nkeepalive: {identities: ['fe80::1%eth0']}\n",
     "policy.keepalive.identities[0]: [user@]host with an IPv4/IPv6 address or a DNS name as host expected"),
    ("keepalive identity host too long", "version: 1\nkeepalive: {identities: ['" + "a" * 60 + ".example']}\n",
     "policy.keepalive.identities[0]: [user@]host with an IPv4/IPv6 address or a DNS name as host expected"),
    ("keepalive duplicate identity", "version: 1\nkeepalive: {identities: [SBC.example.com, sbc.example.com.]}\n",
     "policy.keepalive.identities[1]:"),
    ("keepalive header with a line break", "version: 1\nkeepalive: {allow: \"INVITE\\r\\nX: y\"}\n",
     "policy.keepalive.allow: printable ASCII without line breaks, no leading or trailing space expected"),
    ("keepalive header not a string", "version: 1\nkeepalive: {server: 5}\n",
     "policy.keepalive.server: printable ASCII without line breaks, no leading or trailing space expected "
     "(got 5)"),
    ("keepalive header lines too long", "version: 1\nkeepalive: {server: " + "s" * 300 + ", allow: "
     + "A" * 300 + "}\n",
     "policy.keepalive.server: allow/accept/supported/server lines of at most 512 bytes together expected"),
    ("keepalive sample_every negative", "version: 1\nkeepalive: {sample_every: -1}\n",
     "policy.keepalive.sample_every: an integer 0..4294967295 expected (got -1)"),
    ("keepalive nat mode", "version: 1\nkeepalive: {nat_keepalive: block}\n",
     "policy.keepalive.nat_keepalive: one of pass, drop expected (got 'block')"),
    ("keepalive probe port", "version: 1\nkeepalive: {probe: {port: 0}}\n",
     "policy.keepalive.probe.port: an integer 1..65535 expected (got 0)"),
    ("keepalive probe address", "version: 1\nkeepalive: {probe: {address: localhost}}\n",
     "policy.keepalive.probe.address: an IPv4/IPv6 address expected (got 'localhost')"),
    ("keepalive alive shorter than interval", "version: 1\nkeepalive: {probe: {interval_ms: 2000, alive_ms: 1000}}\n",
     "policy.keepalive.probe.alive_ms: at least interval_ms (2000) expected (got 1000)"),
    ("keepalive unknown key", "version: 1\nkeepalive: {enable: true}\n",
     "policy.keepalive.enable: one of the keys enabled, identities,"),
]
