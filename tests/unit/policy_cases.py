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
    ("wrong version", "version: 2\n", "policy.version: unsupported schema version 2"),
    ("missing version", "sip_ports: [5060]\n", "policy.version: required"),
    ("version as string", "version: '1'\n", "policy.version: unsupported schema version"),
    ("unknown top key", "version: 1\nfoo: 1\n", "policy.foo: unknown key"),
    ("not a mapping", "- 1\n- 2\n", "policy: must be a mapping"),
    ("empty document", "", "policy: empty policy document"),
    ("bad yaml", "version: 1\nsip_ports: [5060\n", "policy: invalid YAML"),
    ("duplicate key", "version: 1\nsip_ports: [5060]\nsip_ports: [5061]\n", "policy: invalid YAML"),
    ("bad CIDR", "version: 1\ntrust: [198.18.0.0/33]\n", "policy.trust[0]: not a valid IPv4/IPv6 CIDR"),
    ("CIDR garbage", "version: 1\ndeny: [1.2.3.4, not-an-ip]\n", "policy.deny[1]: not a valid IPv4/IPv6 CIDR"),
    ("host bits", "version: 1\ntrust: [198.18.0.1/24]\n", "policy.trust[0]: host bits set"),
    ("trust+deny same prefix", "version: 1\ntrust: [198.18.5.0/24]\ndeny: [198.18.5.0/24]\n",
     "policy.deny[0]: 198.18.5.0/24 is also listed in trust[0]"),
    ("duplicate CIDR", "version: 1\ndeny: [198.18.5.0/24, 198.18.5.0/24]\n", "policy.deny[1]: duplicate"),
    ("trust not a list", "version: 1\ntrust: 198.18.0.0/24\n", "policy.trust: must be a list"),
    ("negative rate", "version: 1\nrate_limits: {register: {rate: -5}}\n",
     "policy.rate_limits.register.rate: must be an integer >= 0 (got -5)"),
    ("rate not int", "version: 1\nrate_limits: {invite: {rate: fast}}\n",
     "policy.rate_limits.invite.rate: must be an integer >= 0"),
    ("rate is bool", "version: 1\nrate_limits: {invite: {rate: true}}\n",
     "policy.rate_limits.invite.rate: must be an integer >= 0"),
    ("zero burst", "version: 1\nrate_limits: {register: {rate: 5, burst: 0}}\n",
     "policy.rate_limits.register.burst: must be an integer >= 1 (got 0)"),
    ("missing rate", "version: 1\nrate_limits: {register: {burst: 5}}\n",
     "policy.rate_limits.register.rate: required"),
    ("unknown rl class", "version: 1\nrate_limits: {subscribe: {rate: 1}}\n",
     "policy.rate_limits.subscribe: unknown key"),
    ("unknown rl key", "version: 1\nrate_limits: {register: {rate: 1, brust: 3}}\n",
     "policy.rate_limits.register.brust: unknown key"),
    ("unknown method", "version: 1\npriorities: {INVIT: high}\n", "policy.priorities.INVIT: unknown SIP method"),
    ("bad priority", "version: 1\npriorities: {INVITE: urgent}\n",
     "policy.priorities.INVITE: must be one of low|normal|high|critical"),
    ("port zero", "version: 1\nsip_ports: [0]\n", "policy.sip_ports[0]: must be an integer in 1..65535"),
    ("port too big", "version: 1\nsip_ports: [5060, 70000]\n", "policy.sip_ports[1]: must be an integer in 1..65535"),
    ("too many ports", "version: 1\nsip_ports: [1,2,3,4,5,6,7,8,9]\n", "policy.sip_ports: at most 8 ports"),
    ("no sip ports", "version: 1\nsip_ports: []\n", "policy.sip_ports: must list at least 1"),
    ("duplicate port", "version: 1\nsip_ports: [5060, 5060]\n", "policy.sip_ports[1]: duplicate port 5060"),
    ("tls overlaps sip", "version: 1\nsip_ports: [5060]\ntls_ports: [5060]\n",
     "policy.tls_ports[0]: port 5060 is also listed in sip_ports"),
    ("v4 prefix 0", "version: 1\naggregation: {ipv4_prefix: 0}\n",
     "policy.aggregation.ipv4_prefix: must be an integer in 1..32 (got 0)"),
    ("v6 prefix 129", "version: 1\naggregation: {ipv6_prefix: 129}\n",
     "policy.aggregation.ipv6_prefix: must be an integer in 1..128 (got 129)"),
    ("overload level 4", "version: 1\noverload: {level: 4}\n",
     "policy.overload.level: must be an integer in 0..3 (got 4)"),
    ("shed_below length", "version: 1\noverload: {shed_below: [low, high]}\n",
     "policy.overload.shed_below: must list exactly 4"),
    ("shed_below decreasing", "version: 1\noverload: {shed_below: [low, high, normal, critical]}\n",
     "policy.overload.shed_below[2]: must not be lower than level 1"),
    ("bad dscp name", "version: 1\nmarking: {dscp: XX9}\n", "policy.marking.dscp: unknown DSCP name"),
    ("dscp 64", "version: 1\nmarking: {dscp: 64}\n", "policy.marking.dscp: must be an integer in 0..63"),
    ("marking enabled not bool", "version: 1\nmarking: {enabled: maybe}\n",
     "policy.marking.enabled: must be true or false"),
    ("negative deadman", "version: 1\ndeadman: {timeout_ms: -1}\n", "policy.deadman.timeout_ms: must be an integer"),
    ("rate_limits not mapping", "version: 1\nrate_limits: [1, 2]\n", "policy.rate_limits: must be a mapping"),
    ("deny everything IPv4", "version: 1\ndeny: [198.18.66.0/24, 0.0.0.0/0]\n",
     "policy.deny[1]: 0.0.0.0/0 is shorter than /8 (the IPv4 minimum)"),
    ("deny everything IPv6", "version: 1\ndeny: ['::/0']\n", "policy.deny[0]: ::/0 is shorter than /16"),
    ("trust everything IPv4", "version: 1\ntrust: [0.0.0.0/1]\n", "policy.trust[0]: 0.0.0.0/1 is shorter than /8"),
    ("trust everything IPv6", "version: 1\ntrust: ['2000::/3']\n", "policy.trust[0]: 2000::/3 is shorter than /16"),
    ("deny shorter than raised minimum", "version: 1\nacl_guard: {ipv4_min_prefix: 16}\ndeny: [198.0.0.0/8]\n",
     "policy.deny[0]: 198.0.0.0/8 is shorter than /16"),
    ("scoped IPv6 deny", "version: 1\ndeny: ['fe80::1%eth0/128']\n", "policy.deny[0]: scoped IPv6 address"),
    ("scoped IPv6 trust", "version: 1\ntrust: ['fe80::%lo/64']\n", "policy.trust[0]: scoped IPv6 address"),
    ("acl_guard minimum out of range", "version: 1\nacl_guard: {ipv6_min_prefix: 129}\n",
     "policy.acl_guard.ipv6_min_prefix: must be an integer in 0..128 (got 129)"),
    ("acl_guard allow_broad not bool", "version: 1\nacl_guard: {allow_broad: 'yes'}\n",
     "policy.acl_guard.allow_broad: must be true or false"),
    ("acl_guard unknown key", "version: 1\nacl_guard: {allow: true}\n", "policy.acl_guard.allow: unknown key"),
]
