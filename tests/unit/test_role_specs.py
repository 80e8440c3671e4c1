"""Every role's meta/argument_specs.yml has exactly the keys of defaults/main.yml, same defaults."""
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/defaults/main.yml"))


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults), f"{role.name}: spec and defaults differ"
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{role.name}.{name}: default differs"
        assert name.startswith(f"{role.name}_"), f"{role.name}.{name}: public vars are <role>_*"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_standard_task_files(role):
    for name in ("main", "preflight", "install", "configure", "run"):
        assert (role / "tasks" / f"{name}.yml").is_file(), f"{role.name}: tasks/{name}.yml missing"


def test_there_are_roles():
    assert ROLES, "no roles found"
