"""eTSF test lab: Debian 12 hosts booted with systemd-nspawn in lab network namespaces.

Entry point: ``python -m lab up|down|status|ssh|reboot|inventory`` (run from the repo
root, as root) with the project venv's Python: lab.netns uses pyroute2.  lab.proxy and
lab.supervisor are stdlib only.
"""
