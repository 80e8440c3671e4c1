"""Offline stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test wants to download get-pip.py before it creates sanity-test virtual
environments; this machine reaches only the package registries, so
`make setup` installs this file as ~/.ansible/test/cache/get_pip_24_2.py.
It bootstraps pip with the interpreter's own `ensurepip`, then installs the
requested packages with that pip (from the configured package index).
"""
import subprocess
import sys

# get-pip.py options that are not pip-install options
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel", "--no-pip"}


def main() -> int:
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                   check=True, stdout=subprocess.DEVNULL)
    args = [a for a in sys.argv[1:] if a not in _GET_PIP_ONLY]
    if not any(not a.startswith("-") for a in args):
        return 0
    return subprocess.run([sys.executable, "-m", "pip", "install", *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
