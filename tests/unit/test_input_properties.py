"""Property-based tests (Hypothesis) of the policy and fail-safe validators.

* valid generated policies: validate -> compile -> decode (the compiled struct and ACL keys
  read back with etsf.layout) equals what the document says;
* every mutation of a valid document that makes it invalid (hypothesis_policies.mutations)
  gives ONE PolicyError / FailsafeError line naming a path that exists in the input;
* arbitrary text and text-level corruptions of valid YAML: a policy or one error line,
  never another exception.

Deterministic: derandomize=True, no example database, fixed max_examples: 300 cases per
test, 500 for arbitrary text (2,600 in all, about 20 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import io

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etsf import cli
from etsf import failsafe as F
from etsf import layout
from etsf import policy as P
from etsf.policy import image

from hypothesis_policies import expected_live, failsafe_docs, mutations, policy_docs, resolve

FAST = settings(derandomize=True, database=None, max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _decode_image(img, overload_level):
    acl = []
    for entries in (img.acl_v4, img.acl_v6):
        for k, v in entries.items():
            slot, net = P.decode_acl_key(k)
            assert slot == img.slot
            acl.append((net, int.from_bytes(v, "little")))
    ctl = layout.Ctl()
    ctl.overload_level = overload_level
    ctl.deadman_ns = img.deadman_ns
    ctl.ka_sample_every = img.ka_sample_every
    ids = []
    for k, v in img.ka_ids.items():
        slot, ident = image.decode_ka_key(k)
        assert slot == img.slot
        if int.from_bytes(v, "little") & layout.KA_ID_PRIMARY:
            ids.append(ident)
    ka = image.decode_keepalive(layout.Policy.from_bytes(img.policy).flags, img.ka_cfg, ids, ctl.ka_sample_every)
    return P.decode(img.policy, acl, ctl, ka)


@FAST
@given(policy_docs(), st.integers(0, P.POLICY_SLOTS - 1), st.integers(1, 2**32 - 1))
def test_valid_policy_compiles_and_decodes_to_itself(doc, slot, generation):
    p = P.validate(doc)
    img = P.compile_policy(p, slot, generation)
    assert len(img.policy) == ctypes.sizeof(layout.Policy)
    level = doc.get("overload", {}).get("level")
    got = _decode_image(img, 0 if level is None else level)
    assert got.pop("generation") == generation
    want = expected_live(doc)
    want["overload"]["level"] = 0 if level is None else level
    assert got == want
    # the canonical form is a fixed point of the validator (policy.applied.yml, diff)
    d = p.to_dict()
    assert P.validate(yaml.safe_load(yaml.safe_dump(d))).to_dict() == d
    assert P.diff(got, d) == [] if level is not None else True


def _one_line_policy_error(doc):
    try:
        P.validate(doc)
    except P.PolicyError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(e.path + ": "), msg
        return e
    raise AssertionError(f"accepted: {doc!r}")


@FAST
@given(policy_docs(with_services=True), st.data())
def test_mutated_policy_one_line_error_naming_an_existing_path(doc, data):
    P.validate(doc)                                       # the base document is valid
    kind, path, bad = data.draw(st.sampled_from(mutations(doc)), label="mutation")
    e = _one_line_policy_error(bad)
    resolve(bad, e.path, P.ROOT)                          # the named path exists in the input
    # and it is where the mutation was, or inside it
    named = e.path[len(P.ROOT):]
    want = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    assert named.startswith(want) or kind in ("duplicate",) and named.startswith(want.rsplit("[", 1)[0]), \
        (kind, want, e.path)
    # the same through YAML text (what the file and the role give the validator)
    with_text = yaml.safe_dump(bad, allow_unicode=True)
    try:
        P.load_text(with_text)
    except P.PolicyError as e2:
        assert "\n" not in str(e2)
    else:
        raise AssertionError(with_text)


@settings(derandomize=True, database=None, max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_policy_or_one_line_error(text):
    try:
        P.load_text(text)
    except P.PolicyError as e:
        assert "\n" not in str(e)
        assert e.path == P.ROOT or e.path.startswith(P.ROOT + ".") or e.path.startswith(P.ROOT + "[")


@FAST
@given(policy_docs(with_services=True), st.data())
def test_corrupted_yaml_policy_or_one_line_error(doc, data):
    text = yaml.safe_dump(doc)
    i = data.draw(st.integers(0, len(text)), label="at")
    n = data.draw(st.integers(0, 8), label="cut")
    ins = data.draw(st.text(st.sampled_from("[]{}:,-&*!|>'\"#%@`? \n\t0aZ\\\x00"), max_size=8), label="insert")
    try:
        P.load_text(text[:i] + ins + text[i + n:])
    except P.PolicyError as e:
        assert "\n" not in str(e)


# ---- fail-safe configuration ---------------------------------------------------------------


@FAST
@given(failsafe_docs())
def test_valid_failsafe_config_round_trips(doc):
    cfg = F.validate(doc)
    assert F.validate(cfg) == cfg                          # the merged config is a fixed point
    for k, v in doc.items():                               # every given value is what is used
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, dict):
                    for k3, v3 in v2.items():
                        assert cfg[k][k2][k3] == v3
                else:
                    assert cfg[k][k2] == v2
        else:
            assert cfg[k] == v
    assert set(cfg) == set(F.DEFAULTS)


def _failsafe_error(doc) -> str:
    try:
        F.validate(doc)
    except F.FailsafeError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        return msg.split(": ", 1)[0]
    raise AssertionError(f"accepted: {doc!r}")


@FAST
@given(failsafe_docs(), st.data())
def test_mutated_failsafe_config_one_line_error_naming_an_existing_path(tmp_path_factory, doc, data):
    F.validate(doc)
    cands = mutations(doc, duplicates=False)
    kind, path, bad = data.draw(st.sampled_from(cands), label="mutation")
    where = _failsafe_error(bad)
    # the same file through `etsfctl failsafe --check` (what the role's validate runs)
    f = tmp_path_factory.getbasetemp() / "failsafe-mutated.yml"
    f.write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(["failsafe", "--check", "--config", str(f)])
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue() == f"etsfctl: error: {f}: {where}: " + err.getvalue().split(f"{where}: ", 1)[1], err.getvalue()
    assert err.getvalue().count("\n") == 1
    resolve(bad, where, "failsafe")
    want = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    named = where[len("failsafe"):]
    # at the mutation, inside it, or on the entry holding it (a bad list element is
    # reported on its list, an unknown key of a heartbeat file on the file entry)
    assert named.startswith(want) or want.startswith(named), (kind, want, where)


@FAST
@given(failsafe_docs(), st.data())
def test_corrupted_failsafe_yaml_config_or_one_line_error(tmp_path_factory, doc, data):
    text = yaml.safe_dump(doc)
    i = data.draw(st.integers(0, len(text)), label="at")
    ins = data.draw(st.text(st.sampled_from("[]{}:,-&*!|>'\"#%@ \n0a\x00"), max_size=8), label="insert")
    f = tmp_path_factory.getbasetemp() / "failsafe-fuzz.yml"
    f.write_text(text[:i] + ins + text[i + data.draw(st.integers(0, 8), label="cut"):], encoding="utf-8")
    try:
        F.load_config(str(f))
    except F.FailsafeError as e:
        assert "\n" not in str(e)
