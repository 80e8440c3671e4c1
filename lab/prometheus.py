"""A real Prometheus (Debian's prometheus 2.x) scraping lab hosts, for the tests.

The targets, the scrape job and the alert rules are the ones playbooks/prometheus.yml (role
etsf.sip.monitoring) generates from the lab inventory; Prometheus runs in the lab switch netns
(where the hosts' management addresses are reachable), listening on that netns' loopback only,
with its data in a scratch directory.  Nothing here changes the switch: stop() ends the one
process start() began.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from lab.common import REPO_ROOT, SWITCH_NS

PROMETHEUS = "/usr/bin/prometheus"
# loopback of the switch netns; not reachable from anywhere else
DEFAULT_PORT = 19761
_FETCH = ("import sys, urllib.request\n"
          "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())")


def ansible_bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def generate(inventory: str | Path, workdir: Path, *extra: str,
             scrape_interval: str = "2s") -> subprocess.CompletedProcess:
    """Run playbooks/prometheus.yml on the controller for `inventory` (more ansible-playbook
    arguments in `extra`): workdir/etsf (file_sd, rules, snippet) and workdir/prometheus.yml."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False")
    return subprocess.run(
        [ansible_bin("ansible-playbook"), "-i", str(inventory), "playbooks/prometheus.yml",
         "-e", "etsf_prometheus_target=localhost", "-e", "ansible_connection=local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"monitoring_dir={workdir}/etsf", "-e", f"monitoring_prometheus_config={workdir}/prometheus.yml",
         "-e", f"monitoring_scrape_interval={scrape_interval}",
         "-e", f"monitoring_scrape_timeout={scrape_interval}", *extra],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


class Prometheus:
    """One Prometheus process in the switch netns."""

    def __init__(self, workdir: Path, port: int = DEFAULT_PORT):
        self.workdir = Path(workdir)
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "prometheus.log"

    def start(self) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", SWITCH_NS, PROMETHEUS,
                 f"--config.file={self.workdir}/prometheus.yml", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path> from inside the switch netns; the decoded JSON answer."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        cp = subprocess.run(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-c", _FETCH, url],
                            capture_output=True, text=True, timeout=30, check=False)
        if cp.returncode != 0:
            raise OSError(f"GET {url}: {cp.stderr.strip().splitlines()[-1:]}")
        return json.loads(cp.stdout)

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["data"]["result"]

    def wait(self, what, tries: int = 90, pause: float = 1.0):
        """Poll `what()` until it returns something truthy; at most `tries` polls (a count,
        not a deadline).  Returns the last value (falsy when it never came)."""
        value = None
        for _try in range(tries):
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                value = what()
            except OSError:
                value = None
            if value:
                return value
            time.sleep(pause)
        return value
