"""The reference tables in docs/reference/, generated from the document schemas.

``python -m etsf.schema_docs NAME`` prints one document's reference (``policy``, ``failsafe``,
``exporter``);
``--write DIR`` writes every one to ``DIR/NAME.md`` and ``--check DIR`` exits 1, naming the
stale files, when what is committed differs (tests/unit/test_schema_docs.py does the same).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from . import schema as S
from .failsafe import config as failsafe_config
from .policy import schema as policy_schema
from .telemetry import webconfig

#: name -> (schema, title, introduction, rules that span keys, what follows the defaults)
DOCUMENTS = {
    "policy": (
        policy_schema.POLICY, "Policy reference (`version: 1`)",
        "The SIP policy document: `/etc/etsf/policy.yml`, the inventory variable `etsf_policy` of the "
        "`etsf.sip.policy` role, applied by `etsfctl policy apply` and the `etsf.sip.policy` module. "
        "Described once, by `POLICY` in `src/etsf/policy/schema.py`; every key is optional unless it says "
        "required, and unknown keys are errors. A mistake is one line, "
        "`<path>: <what was expected> expected (got <value>)`. Guide and examples: [../policy.md](../policy.md).",
        policy_schema.CROSS_RULES, None),
    "failsafe": (
        failsafe_config.SCHEMA, "Fail-safe configuration reference (`version: 1`)",
        "The fail-safe watchdog configuration: `/etc/etsf/failsafe.yml`, written by the `etsf.sip.failsafe` "
        "role, read by `etsfctl failsafe` (`--check` validates it). Described once, by `SCHEMA` in "
        "`src/etsf/failsafe/config.py`; every key is optional and unknown keys are errors. A mistake is one "
        "line, `<path>: <what was expected> expected (got <value>)`. What the rules and actions do: "
        "[../failsafe.md](../failsafe.md).",
        (), None),
    "exporter": (
        webconfig.SCHEMA, "Exporter web configuration (`etsfctl exporter --web.config.file`)",
        "The web configuration of the exporter: TLS on the listener and HTTP basic auth, in the format "
        "Prometheus exporters share (exporter-toolkit), limited to the keys below; any other key is refused. "
        "Written by the `etsf.sip.telemetry` role, read by `etsfctl exporter --web.config.file` "
        "(`--check-config` validates it). Described once, by `SCHEMA` in `src/etsf/telemetry/webconfig.py`; "
        "`etsfctl exporter --web.config.reference` prints this page. A mistake is one line, "
        "`<file>: <path>: <what was expected> expected (got <value>)`; a hash is never quoted.",
        webconfig.CROSS_RULES, webconfig.reference_notes),
}


def render(name: str) -> str:
    """The Markdown reference of one document."""
    root, title, intro, rules, notes = DOCUMENTS[name]
    text = S.markdown_table(root, title, intro)
    if rules:
        text += "\nRules that span keys:\n\n" + "".join(f"- {r}\n" for r in rules)
    defaults = root.default_value()
    if defaults is not S.MISSING:
        text += ("\nEvery default, as a file (an empty file means the same):\n\n```yaml\n"
                 + yaml.safe_dump(defaults, sort_keys=False, default_flow_style=False) + "```\n")
    if notes:
        text += notes()
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etsf.schema_docs", description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?", choices=sorted(DOCUMENTS), help="print this document's reference")
    g.add_argument("--write", metavar="DIR", help="write every reference to DIR/NAME.md")
    g.add_argument("--check", metavar="DIR", help="exit 1 when a reference in DIR is not current")
    args = ap.parse_args(argv)
    if args.name:
        sys.stdout.write(render(args.name))
        return 0
    stale = []
    for name in sorted(DOCUMENTS):
        path = os.path.join(args.write or args.check, f"{name}.md")
        want = render(name)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read() == want
        except FileNotFoundError:
            current = False
        if args.write and not current:
            with open(path, "w", encoding="utf-8") as f:
                f.write(want)
        elif not current:
            stale.append(path)
    if stale:
        print(f"not current (run python -m etsf.schema_docs --write {args.check}): {', '.join(stale)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
