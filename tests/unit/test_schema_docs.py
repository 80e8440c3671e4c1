"""docs/reference/*.md are what `python -m etsf.schema_docs` prints for the current schemas, and
the schema core itself: defaults, the one error style, the reference rows."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etsf import schema as S
from etsf import schema_docs

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(schema_docs.DOCUMENTS))
def test_committed_reference_is_current(name):
    committed = (REFERENCE / f"{name}.md").read_text(encoding="utf-8")
    assert committed == schema_docs.render(name), \
        f"docs/reference/{name}.md is stale: run python -m etsf.schema_docs --write docs/reference"


def test_every_document_key_has_a_row_and_a_meaning():
    for name, (root, *_unused) in schema_docs.DOCUMENTS.items():
        text = schema_docs.render(name)
        for path, node in root.rows(""):
            assert f"| `{path}` |" in text, (name, path)
            assert node.doc or path.endswith(">"), f"{name}: {path} has no meaning"


def test_check_command_finds_a_stale_file(tmp_path):
    env = {"PYTHONPATH": str(REPO / "src")}
    run = [sys.executable, "-m", "etsf.schema_docs"]
    assert subprocess.run([*run, "--write", str(tmp_path)], env=env, check=False, timeout=60).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.md" for n in schema_docs.DOCUMENTS)
    assert subprocess.run([*run, "--check", str(tmp_path)], env=env, check=False, timeout=60).returncode == 0
    (tmp_path / "policy.md").write_text("old\n", encoding="utf-8")
    r = subprocess.run([*run, "--check", str(tmp_path)], env=env, capture_output=True, text=True, check=False,
                       timeout=60)
    assert r.returncode == 1 and "policy.md" in r.stderr and "failsafe.md" not in r.stderr
    r = subprocess.run([*run, "policy"], env=env, capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0 and r.stdout == schema_docs.render("policy")


DOC = S.Map({
    "n": S.Int(1, 9, "a count", default=3),
    "mode": S.Choice(("a", "b"), "a mode", default="a"),
    "items": S.List(S.Num(0, 1), "fractions", max_len=2, unique=lambda v: v, default=[]),
    "sub": S.Map({"on": S.Bool("switch", default=False),
                  "name": S.Text("a short word", lambda v: v.isalpha() and len(v) < 10, required=True)},
                 "needs a name"),
})


def test_defaults_fill_absent_keys():
    assert DOC.check({"sub": {"name": "x"}}, "d") == {"n": 3, "mode": "a", "items": [],
                                                      "sub": {"on": False, "name": "x"}}
    # a section with a required key has no default: absent, it stays absent
    assert DOC.check({}, "d") == DOC.default_value() == {"n": 3, "mode": "a", "items": []}


@pytest.mark.parametrize("doc, message", [
    ({"n": 0, "sub": {"name": "x"}}, "d.n: an integer 1..9 expected (got 0)"),
    ({"n": True, "sub": {"name": "x"}}, "d.n: an integer 1..9 expected (got true)"),
    ({"mode": "c", "sub": {"name": "x"}}, "d.mode: one of a, b expected (got 'c')"),
    ({"mode": 1, "sub": {"name": "x"}}, "d.mode: one of a, b expected (got 1)"),
    ({"items": [0.5, 0.5], "sub": {"name": "x"}}, "d.items[1]: no duplicate of d.items[0] expected (got 0.5)"),
    ({"items": [0, 1, 0.5], "sub": {"name": "x"}}, "d.items: a list of 0..2 items expected (got a list of 3)"),
    ({"items": [float("nan")], "sub": {"name": "x"}}, "d.items[0]: a number 0..1 expected (got nan)"),
    ({"sub": None}, "d.sub: a mapping expected (got null)"),
    ({"sub": {}}, "d.sub.name: a short word expected (got nothing)"),
    ({"sub": {"name": "x" * 80}}, "d.sub.name: a short word expected (got '" + "x" * 60 + "'...)"),
    ({"sub": {"name": "x", "off": 1}}, "d.sub.off: one of the keys on, name expected (got 'off')"),
    ({1: 2}, "d: string keys expected (got 1)"),
    ({"a\nb": 1}, "d.'a\\nb': one of the keys n, mode, items, sub expected (got 'a\\nb')"),
    ([], "d: a mapping expected (got a list of 0)"),
])
def test_one_error_style(doc, message):
    with pytest.raises(S.Invalid) as e:
        DOC.check(doc, "d")
    assert str(e.value) == message
    assert str(e.value) == f"{e.value.path}: {e.value.message}"


def test_rows_and_lookup():
    rows = [p for p, _unused in DOC.rows("")]
    assert rows == ["n", "mode", "items", "sub", "sub.on", "sub.name"]
    assert S.node_at(DOC, "sub.on").default is False
    with pytest.raises(KeyError):
        S.node_at(DOC, "sub.nope")


NAMES = S.MapOf(S.Text("a lower-case name", lambda v: v.isalpha() and v.islower()),
                S.Text("a token", lambda v: v.startswith("t-"), "a secret token", secret=True),
                "name to token", key_label="NAME", default={}, nullable=True)


def test_keys_checked_by_a_node_and_secrets_never_quoted():
    assert NAMES.check({"ops": "t-1"}, "") == {"ops": "t-1"} and NAMES.check(None, "") == {}
    with pytest.raises(S.Invalid) as e:
        NAMES.check({"Ops": "t-1"}, "names")
    assert str(e.value) == "names: a lower-case name expected (got 'Ops')"
    with pytest.raises(S.Invalid) as e:
        NAMES.check({"ops": "hunter2"}, "")
    assert str(e.value) == "ops: a token expected (got a string of 7 characters)"
    with pytest.raises(S.Invalid) as e:
        NAMES.check([], "")
    assert str(e.value) == "document: a mapping or null expected (got a list of 0)"
    assert [p for p, _unused in NAMES.rows("names")] == ["names", "names.<NAME>"]
    assert S.node_at(S.Map({"n": NAMES}), "n.ops").secret and S.node_at(S.Map({"n": NAMES}), "n") is NAMES
    with pytest.raises(KeyError):
        S.node_at(S.Map({"n": NAMES}), "n.Ops")
