"""The roles and the one schema of each document agree: the policy role passes its document
whole (a dict its argument_specs does not describe again, or describes exactly as the schema
does), every fail-safe role variable that lands in failsafe.yml has the type, choices and
default of the schema key it sets, every telemetry role variable that lands in the exporter's
web configuration agrees with its key, and no preflight assert repeats a rule of the schema."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jinja2
import pytest
import yaml

from etsf import schema as S
from etsf.failsafe import config as F
from etsf.policy import schema as P
from etsf.telemetry import webconfig as W

ROLES = Path(__file__).resolve().parents[2] / "roles"

# failsafe role variables that steer the role itself and never land in failsafe.yml as such
FAILSAFE_ROLE_ONLY = {"failsafe_enabled", "failsafe_config_path", "failsafe_exporter_heartbeat",
                      "failsafe_exporter_heartbeat_max_age_s", "failsafe_overload_heartbeat_max_age_s",
                      "failsafe_keepalive_heartbeat_max_age_s"}


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b)
    return a == b


def disagreements(name: str, opt: dict, node: S.Node) -> list[str]:
    """How an argument_specs option differs from the schema node it describes ([] if it agrees)."""
    out = []
    typ = opt.get("type", "str")
    if "raw" not in (typ, node.ansible) and typ != node.ansible:
        out.append(f"{name}: type {typ}, schema {node.ansible}")
    if isinstance(node, S.List) and "elements" in opt and "raw" not in (opt["elements"], node.item.ansible) \
            and opt["elements"] != node.item.ansible:
        out.append(f"{name}: elements {opt['elements']}, schema {node.item.ansible}")
    # choices, when given, are the schema's; a typed (not raw) option of a choice must give them
    if (opt.get("choices") is not None or (node.choices() is not None and typ != "raw")) \
            and opt.get("choices") != node.choices():
        out.append(f"{name}: choices {opt.get('choices')}, schema {node.choices()}")
    if opt.get("required") and not node.required:
        out.append(f"{name}: required, schema optional")
    if "default" in opt and not (isinstance(opt["default"], str) and "{{" in opt["default"]):
        d = opt["default"]
        if isinstance(node, (S.Map, S.MapOf)):
            try:    # a mapping default is merged over the schema's: it must validate
                node.check(d, name)
            except S.Invalid as e:
                out.append(f"{name}: default does not validate ({e})")
        elif not _same(d, node.default_value()):
            out.append(f"{name}: default {d!r}, schema {node.default_value()!r}")
    sub = opt.get("options")
    if sub is not None:
        fields = (node.item if isinstance(node, S.List) else node)
        if not isinstance(fields, S.Map):
            out.append(f"{name}: options given, schema {fields.ansible} has no fixed keys")
        else:
            # Ansible refuses keys its options do not list: they must be the schema's, all of them
            if set(sub) != set(fields.fields):
                out.append(f"{name}: options {sorted(sub)}, schema keys {sorted(fields.fields)}")
            for k in set(sub) & set(fields.fields):
                out += disagreements(f"{name}.{k}", sub[k], fields.fields[k])
    return out


def _spec(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def _asserted(role: str) -> str:
    """The text of every assert condition in a role's preflight."""
    tasks = yaml.safe_load((ROLES / role / "tasks/preflight.yml").read_text())
    return "\n".join(json.dumps(t["ansible.builtin.assert"]["that"]) for t in tasks if "ansible.builtin.assert" in t)


# ---- policy ------------------------------------------------------------------------------


def test_policy_document_spec_agrees_with_the_schema():
    opt = _spec("policy")["policy_document"]
    assert opt["type"] == "dict"
    assert disagreements("policy_document", opt, P.POLICY) == []
    assert "docs/reference/policy.md" in " ".join(opt["description"])


def test_policy_role_default_document_validates():
    defaults = yaml.safe_load((ROLES / "policy/defaults/main.yml").read_text())
    assert defaults["policy_document"] == _spec("policy")["policy_document"]["default"]
    # the fallback of the default expression is a valid document
    assert P.validate({"version": 1}).to_dict()["version"] == 1
    assert "or {'version': 1}" in defaults["policy_document"]


def test_policy_preflight_repeats_no_document_rule():
    assert "policy_document" not in _asserted("policy")
    preflight = (ROLES / "policy/tasks/preflight.yml").read_text()
    assert "policy apply --check -" in preflight


# ---- fail-safe --------------------------------------------------------------------------


def _render(**over) -> dict:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda s: "# " + s
    env.filters["to_json"] = json.dumps
    env.tests["none"] = lambda v: v is None
    ctx = yaml.safe_load((ROLES / "failsafe/defaults/main.yml").read_text())
    ctx.update(ansible_managed="Ansible managed", **over)
    return yaml.safe_load(env.from_string((ROLES / "failsafe/templates/failsafe.yml.j2").read_text()).render(**ctx))


def _changed(a, b, path="") -> list[str]:
    """Key paths where two rendered documents differ."""
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        return [p for k in a for p in _changed(a[k], b[k], f"{path}.{k}" if path else k)]
    return [] if a == b and type(a) is type(b) else [path]


def _probe(value):
    """A value of the same type as `value`, different from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value + 0.125
    if isinstance(value, str):
        return "zz_probe"
    if isinstance(value, list):
        return ["zz_probe"]
    if isinstance(value, dict):
        return {"zz_probe": 1}
    return 0.125


@functools.lru_cache(maxsize=1)
def failsafe_variable_keys() -> dict[str, str]:
    """{role variable: the configuration key it sets}, found by rendering the role's template."""
    defaults = yaml.safe_load((ROLES / "failsafe/defaults/main.yml").read_text())
    base = _render()
    out = {}
    for var, value in defaults.items():
        changed = _changed(base, _render(**{var: _probe(value)}))
        assert len(changed) <= 1, (var, changed)
        if changed:
            out[var] = changed[0]
    return out


def test_failsafe_variables_found_in_the_template():
    keys = failsafe_variable_keys()
    assert keys["failsafe_recovery"] == "actions.recovery" and keys["failsafe_rules"] == "rules"
    defaults = yaml.safe_load((ROLES / "failsafe/defaults/main.yml").read_text())
    assert set(defaults) - set(keys) == FAILSAFE_ROLE_ONLY


@pytest.mark.parametrize("var", sorted(set(yaml.safe_load((ROLES / "failsafe/defaults/main.yml").read_text()))
                                       - FAILSAFE_ROLE_ONLY))
def test_failsafe_variable_agrees_with_its_schema_key(var):
    key = failsafe_variable_keys()[var]
    assert disagreements(var, _spec("failsafe")[var], S.node_at(F.SCHEMA, key)) == []
    assert f"C({key})" in " ".join(_spec("failsafe")[var]["description"])


def test_failsafe_role_defaults_are_the_agent_defaults():
    assert F.validate(_render()) == F.DEFAULTS


def test_failsafe_preflight_repeats_no_document_rule():
    asserted = _asserted("failsafe")
    for var in failsafe_variable_keys():
        assert var not in asserted, var
    assert "failsafe --check --config -" in (ROLES / "failsafe/tasks/preflight.yml").read_text()


# ---- exporter web configuration (telemetry role) -------------------------------------------


@pytest.mark.parametrize("var", sorted(W.ROLE_VARS))
def test_telemetry_variable_agrees_with_its_schema_key(var):
    key = W.ROLE_VARS[var]
    opt, node = _spec("telemetry")[var], S.node_at(W.SCHEMA, key)
    assert yaml.safe_load((ROLES / "telemetry/defaults/main.yml").read_text())[var] == opt["default"], var
    if node.required:
        # the role's "" leaves the section out of the file (no TLS); anything else is the key's value
        assert opt["default"] == "" and not opt.get("required"), var
        opt = {k: v for k, v in opt.items() if k != "default"}
    if key == "basic_auth_users":
        # the role takes plaintext passwords and writes their hashes: only the mapping agrees
        assert opt["type"] == "dict" and opt["default"] == {} and opt["no_log"] is True
        return
    assert disagreements(var, opt, node) == []
    assert f"C({key})" in " ".join(opt["description"] if isinstance(opt["description"], list)
                                   else [opt["description"]])


def test_every_telemetry_web_variable_is_tied_to_a_key():
    web_vars = {v for v in _spec("telemetry") if v.startswith(("telemetry_tls_", "telemetry_basic_auth_users"))}
    assert web_vars == set(W.ROLE_VARS)


# ---- the check itself finds what it is for ----------------------------------------------------


@pytest.mark.parametrize("opt, node, want", [
    ({"type": "str"}, S.Int(0, 3), "type str, schema int"),
    ({"type": "float", "default": 1}, S.Num(0, 3, default=2.0), "default 1, schema 2.0"),
    ({"type": "str", "choices": ["a"]}, S.Choice(("a", "b")), "choices ['a'], schema ['a', 'b']"),
    ({"type": "list", "elements": "int"}, S.List(S.Text("t", bool)), "elements int, schema str"),
    ({"type": "dict", "default": {"x": 1}}, S.Map({"y": S.Int(0, 1)}), "default does not validate"),
    ({"type": "dict", "options": {"version": {"type": "int"}}}, P.POLICY, "options ['version'], schema keys"),
    ({"type": "dict", "options": {k: {"type": "raw"} for k in P.TOP_KEYS} | {"sip_ports": {"type": "int"}}},
     P.POLICY, "x.sip_ports: type int, schema list"),
])
def test_disagreements_are_found(opt, node, want):
    found = disagreements("x", opt, node)
    assert found and want in found[0], found


def test_the_old_policy_spec_would_have_been_caught():
    """The spec this replaced listed the keys of the document but not `services`."""
    old = {"type": "dict", "options": {k: {"type": "raw"} for k in P.TOP_KEYS if k != "services"}}
    assert disagreements("policy_document", old, P.POLICY) == [
        "policy_document: options " + str(sorted(set(P.TOP_KEYS) - {"services"}))
        + ", schema keys " + str(sorted(P.TOP_KEYS))]
