"""The exporter says when an operator's revert is held: ``etsf_revert_held{mode}`` for both modes on
every scrape, whether or not the maps can be read (a held detach after a reboot leaves none), so the
alert rules can tell a revert made on purpose from a fault."""
from prometheus_client import CollectorRegistry, generate_latest

from etsf.datapath import held
from etsf.telemetry.collector import EtsfCollector


def _scrape(tmp_path) -> dict[str, float]:
    reg = CollectorRegistry()
    reg.register(EtsfCollector(root=str(tmp_path / "no-pins")))
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line.startswith("etsf_up") or line.startswith("etsf_revert_held"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_held_revert_series_without_maps(tmp_path, monkeypatch):
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path / "state"))
    assert _scrape(tmp_path) == {"etsf_up": 0, 'etsf_revert_held{mode="bypass"}': 0,
                                 'etsf_revert_held{mode="detach"}': 0}
    assert held.hold("detach", actor="noc")
    rec = held.read()
    got = _scrape(tmp_path)
    assert got == {"etsf_up": 0, 'etsf_revert_held{mode="bypass"}': 0, 'etsf_revert_held{mode="detach"}': 1,
                   'etsf_revert_held_since_timestamp_seconds{mode="detach"}': rec["time"]}
    # a bypass does not replace a held detach; releasing the detach clears the series
    assert not held.hold("bypass")
    assert _scrape(tmp_path)['etsf_revert_held{mode="detach"}'] == 1
    assert held.release("detach")
    assert _scrape(tmp_path) == {"etsf_up": 0, 'etsf_revert_held{mode="bypass"}': 0,
                                 'etsf_revert_held{mode="detach"}': 0}


def test_a_record_that_is_not_one_is_no_hold(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("ETSF_STATE_DIR", str(state))
    for text in ('{"mode": "reboot"}', "not json", '["bypass"]'):
        (state / held.FILE).write_text(text)
        assert _scrape(tmp_path) == {"etsf_up": 0, 'etsf_revert_held{mode="bypass"}': 0,
                                     'etsf_revert_held{mode="detach"}': 0}, text
    # a held bypass whose time is unreadable is still held; its start is unknown (0)
    (state / held.FILE).write_text('{"mode": "bypass", "time": "yesterday"}')
    assert _scrape(tmp_path) == {"etsf_up": 0, 'etsf_revert_held{mode="bypass"}': 1,
                                 'etsf_revert_held{mode="detach"}': 0,
                                 'etsf_revert_held_since_timestamp_seconds{mode="bypass"}': 0}
    assert held.describe(held.read()) == "bypass held since an unknown time by ?"
