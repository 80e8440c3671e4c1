"""eTSF test lab: Debian 12 hosts booted with systemd-nspawn in lab network namespaces.

Entry point: ``python -m lab up|down|status|ssh|reboot|inventory`` (run from the repo
root, as root).  Stdlib only, so both the project venv and Debian's /usr/bin/python3 work.
"""
