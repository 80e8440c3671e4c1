"""Layered policy merge rules (etsf.policy.layers): what replaces, what adds up, what is refused."""
import pytest

from etsf import policy
from etsf.policy.layers import merge_layers

DEFAULTS = {"version": 1, "sip_ports": [5060, 5080], "trust": ["198.19.0.0/24"], "deny": ["198.18.250.0/24"],
            "rate_limits": {"register": {"rate": 20, "burst": 40}, "invite": {"rate": 30, "burst": 60}},
            "overload": {"shed_below": ["low", "normal", "high", "critical"]}}


def test_mappings_merge_key_by_key_and_lists_replace():
    out = merge_layers([("d", DEFAULTS), ("g", {"sip_ports": [5070], "rate_limits": {"register": {"rate": 5}}}),
                        ("h", {"overload": {"shed_below": ["low", "low", "normal", "high"], "level": 1}})])
    assert out["sip_ports"] == [5070]
    assert out["rate_limits"] == {"register": {"rate": 5, "burst": 40}, "invite": {"rate": 30, "burst": 60}}
    assert out["overload"] == {"shed_below": ["low", "low", "normal", "high"], "level": 1}
    policy.validate(out)


def test_trust_and_deny_are_unions_in_layer_order():
    out = merge_layers([("d", DEFAULTS), ("g", {"deny": ["198.18.251.0/24", "198.18.250.0/24"]}),
                        ("h", {"deny": ["198.18.252.0/24"], "trust": ["198.19.0.0/24", "198.19.9.0/24"]})])
    assert out["deny"] == ["198.18.250.0/24", "198.18.251.0/24", "198.18.252.0/24"]
    assert out["trust"] == ["198.19.0.0/24", "198.19.9.0/24"]


def test_layers_are_not_modified_and_empty_layers_skip():
    import copy
    before = copy.deepcopy(DEFAULTS)
    out = merge_layers([("d", DEFAULTS), ("g", None), ("h", {}), ("x", {"deny": ["198.18.9.0/24"]})])
    out["rate_limits"]["register"]["rate"] = 0
    assert DEFAULTS == before
    assert merge_layers([]) == {} and merge_layers([("d", None), ("g", {})]) == {}


def test_a_scalar_over_a_mapping_replaces_it_and_validation_names_the_field():
    out = merge_layers([("d", DEFAULTS), ("h", {"rate_limits": 7})])
    assert out["rate_limits"] == 7
    with pytest.raises(policy.PolicyError, match=r"^policy\.rate_limits: "):
        policy.validate(out)


@pytest.mark.parametrize("layers,msg", [
    ([("etsf_policy_defaults", DEFAULTS), ("etsf_policy_group", ["x"])],
     "etsf_policy_group: must be a mapping (got list)"),
    ([("etsf_policy_defaults", "version: 1")], "etsf_policy_defaults: must be a mapping (got str)"),
    ([("etsf_policy_defaults", DEFAULTS), ("etsf_policy", {"deny": "198.18.1.0/24"})],
     "etsf_policy.deny: must be a list of CIDR prefixes (got str)"),
    ([("etsf_policy_defaults", {"trust": None})],
     "etsf_policy_defaults.trust: must be a list of CIDR prefixes (got null)"),
])
def test_bad_layer_is_one_line_naming_it(layers, msg):
    with pytest.raises(policy.PolicyError) as exc:
        merge_layers(layers)
    assert str(exc.value) == msg
