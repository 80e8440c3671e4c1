"""Property-based tests (Hypothesis) against the REAL pinned maps (unique pin root):

* generated valid policies (with fast-path services) applied one after the other:
  validate -> compile -> write the inactive slot -> flip -> decode from the maps equals
  what the document says (an oracle worked out from the document alone);
* generated invalid policies (mutations of valid ones) given to ``etsfctl policy apply``:
  exit 1, ONE stderr line naming a path that exists in the input, no traceback, and every
  policy/ACL/fast-path map byte-identical before and after.

Deterministic: derandomize=True, no example database, fixed max_examples: 150 cases per
test (about 3 s each on top of the session's object build).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from hypothesis_policies import expected_live, mutations, policy_docs, resolve  # noqa: E402

from etsf import cli, fastpath  # noqa: E402
from etsf import policy as P  # noqa: E402

MAPS = ("etsf_ctl", "etsf_policy", "etsf_acl_v4", "etsf_acl_v6", fastpath.MAP_SVC, fastpath.MAP_RING,
        fastpath.MAP_BACKENDS)
MAPS_SETTINGS = settings(derandomize=True, database=None, max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def loaded(etsf_env, etsf_bpf, build_dir):
    """Classifier, marking and fast-path objects loaded (maps pinned), nothing attached."""
    root = etsf_env["ETSF_PIN_ROOT"]
    progs = {}
    for obj in ("xdp_sip.bpf.o", "tc_sip.bpf.o", "tc_fastpath.bpf.o"):
        progs.update(etsf_bpf.load_object(os.path.join(build_dir, obj), root))
    yield root
    for p in progs.values():
        p.close()


def _maps(bpf, root) -> dict[str, dict[bytes, bytes]]:
    out = {}
    for name in MAPS:
        m = bpf.open_map(name, root)
        try:
            out[name] = {bytes(k): m.lookup(k) for k in list(m.keys())}
        finally:
            m.close()
    return out


def _live_without_meta(root):
    live = P.read_live(root)
    assert live is not None
    live.pop("generation")
    live.pop("active_slot")
    return live


@MAPS_SETTINGS
@given(doc=policy_docs(with_services=True))
def test_generated_policies_round_trip_through_the_maps(loaded, etsf_bpf, doc):
    before = P.read_live(loaded)
    p = P.validate(doc)
    res = P.apply(p, pin_root=loaded, source_text=yaml.safe_dump(doc))
    live = _live_without_meta(loaded)
    want = expected_live(doc)
    if want["overload"]["level"] is None:            # no level in the policy: the running one stays
        want["overload"]["level"] = before["overload"]["level"] if before else 0
    if doc.get("services"):
        want["services"] = p.to_dict()["services"]
    assert live == want
    if before is not None and res["changed"]:        # a new slot went live
        assert res["generation"] == before["generation"] + 1
        assert res["slot"] != before["active_slot"]
    elif before is not None:                         # the same policy again: nothing written
        assert (res["generation"], res["slot"]) == (before["generation"], before["active_slot"])
    # no ACL entry of the other slot is left behind
    acl = _maps(etsf_bpf, loaded)
    slots = {P.decode_acl_key(k)[0] for name in ("etsf_acl_v4", "etsf_acl_v6") for k in acl[name]}
    assert slots <= {res["slot"]}


@MAPS_SETTINGS
@given(doc=policy_docs(with_services=True), data=st.data())
def test_mutated_policies_refused_by_etsfctl_and_maps_unchanged(loaded, etsf_bpf, tmp_path_factory, doc, data):
    if P.read_live(loaded) is None:                 # something live to protect
        P.apply(P.load_text("version: 1\ndeny: [198.18.66.0/24]\n"), pin_root=loaded)
    kind, path, bad = data.draw(st.sampled_from(mutations(doc)), label="mutation")
    f = tmp_path_factory.getbasetemp() / "mutated-policy.yml"
    f.write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
    before = _maps(etsf_bpf, loaded)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(["policy", "apply", str(f)])
    text = err.getvalue()
    assert code == 1, (kind, path, text)
    assert out.getvalue() == ""
    assert text.count("\n") == 1 and text.startswith("etsfctl: error: policy"), text
    assert "Traceback" not in text
    named = text[len("etsfctl: error: "):].split(": ", 1)[0]
    resolve(bad, named, P.ROOT)
    assert _maps(etsf_bpf, loaded) == before
