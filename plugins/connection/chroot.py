# Copyright: eTSF developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run tasks inside a directory tree on the controller with chroot(8).

The appliance builder (role etsf.sip.appliance) applies the eTSF roles to a root
filesystem that is not booted: commands run through ``chroot DIR /bin/sh -c CMD``
and files are copied in and out of DIR.

community.general.chroot does the same job; this one ships inside the collection because
that one is not part of ansible-core and the appliance build must run offline with
ansible-core alone, and because the build needs a per-command time limit and an
environment that names no controller path (see DOCUMENTATION).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: chroot
short_description: Run tasks in a root filesystem directory on the controller with chroot(8)
description:
  - Runs commands inside a directory tree on the controller through C(chroot DIR /bin/sh -c CMD)
    and copies files into and out of that tree.
  - Used by the appliance builder (role P(etsf.sip.appliance#role)) to apply the eTSF roles to a
    debootstrapped root filesystem offline, without booting it.
  - The controller user must be root. Nothing is mounted by the plugin; mount C(/proc), C(/sys)
    and C(/dev) into the tree first when the tasks need them (the appliance role does).
  - "Why not P(community.general.chroot#connection): that plugin does the same job, but it is
    not part of ansible-core; it comes with the full C(ansible) package or from Galaxy, and the
    appliance build and its CI run offline with ansible-core alone. Shipping the connection in
    the collection keeps the collection without dependencies (C(galaxy.yml) lists none)."
  - "What this one adds: O(command_timeout), a limit on each command, so a package script
    that hangs inside the tree fails the build instead of stalling it; an environment that
    names no controller path (C(TMPDIR) dropped, C(HOME=/root), working directory C(/)), so
    modules do not look for the controller's temporary directory inside the tree; the host must
    be an absolute path (a relative one is refused with one line instead of being resolved
    against the controller's working directory)."
  - "Same option names as P(community.general.chroot#connection) where they mean the same
    (O(remote_addr), O(chroot_exe), C(ANSIBLE_CHROOT_EXE), C(ansible_chroot_exe)), so an
    inventory can switch between the two; that one's C(executable) and C(disable_root_check)
    are left out on purpose: commands always run with C(/bin/sh) inside the tree, and only root
    can chroot."
author:
  - eTSF developers (@etsf)
version_added: 0.1.0
options:
  remote_addr:
    description:
      - Absolute path of the root filesystem directory to run in.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_chroot_host
  chroot_exe:
    description:
      - The chroot(8) executable on the controller.
    type: str
    default: chroot
    vars:
      - name: ansible_chroot_exe
    env:
      - name: ANSIBLE_CHROOT_EXE
  command_timeout:
    description:
      - Seconds a single command may run before it is killed (0 means no limit).
    type: int
    default: 3600
    vars:
      - name: ansible_chroot_command_timeout
extends_documentation_fragment:
  - connection_pipelining
notes:
  - The remote user and become are ignored; commands run as the controller's user (root).
  - Environment variables of the controller pass into the chroot, except the ones that would
    point outside the tree (C(TMPDIR)).
"""

EXAMPLES = r"""
# inventory: one host whose name is the directory to chroot into
# appliance:
#   hosts:
#     /srv/appliance/root:
#       ansible_connection: etsf.sip.chroot
#       ansible_python_interpreter: /usr/bin/python3
"""

import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()


class Connection(ConnectionBase):
    """Local chroot connection."""

    transport = "etsf.sip.chroot"
    has_pipelining = True
    # the tree has a POSIX shell; no tty is needed
    has_tty = False
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = None
        self.chroot_cmd = None

    def _root_dir(self) -> str:
        root = self.get_option("remote_addr") or ""
        if not os.path.isabs(root):
            raise AnsibleError(f"chroot: the host must be an absolute directory path, got {root!r}")
        return os.path.normpath(root)

    def _connect(self):
        if self._connected:
            return self
        if os.geteuid() != 0:
            raise AnsibleError("chroot: the controller must run as root to chroot")
        self.root = self._root_dir()
        if not os.path.isdir(self.root):
            raise AnsibleConnectionFailure(f"chroot: {self.root} is not a directory")
        if not (os.path.isfile(os.path.join(self.root, "bin/sh"))
                or os.path.islink(os.path.join(self.root, "bin/sh"))):
            raise AnsibleConnectionFailure(f"chroot: {self.root} has no /bin/sh")
        exe = self.get_option("chroot_exe")
        self.chroot_cmd = exe if os.path.isabs(exe) else shutil.which(exe)
        if not self.chroot_cmd:
            raise AnsibleError(f"chroot: {exe} not found on the controller")
        display.vvv(f"ESTABLISH CHROOT CONNECTION TO {self.root}", host=self.root)
        self._connected = True
        return self

    def _env(self) -> dict:
        env = dict(os.environ)
        env.pop("TMPDIR", None)
        env["HOME"] = "/root"
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = [self.chroot_cmd, self.root, "/bin/sh", "-c", cmd]
        display.vvv(f"EXEC {argv}", host=self.root)
        timeout = self.get_option("command_timeout") or None
        with subprocess.Popen([to_bytes(a, errors="surrogate_or_strict") for a in argv],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self._env(), cwd="/") as proc:
            try:
                stdout, stderr = proc.communicate(in_data, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                raise AnsibleError(f"chroot: command timed out after {timeout}s: {cmd}") from None
            return proc.returncode, stdout, stderr

    def _run_in_tree(self, script: str, in_stream=None, out_stream=None) -> None:
        """Run `script` inside the tree with stdin/stdout bound to the given files.

        Paths are resolved by the chrooted shell, so a symlink in the tree can never point
        a copy at a file of the controller."""
        argv = [self.chroot_cmd, self.root, "/bin/sh", "-c", script]
        proc = subprocess.run(argv, stdin=in_stream, stdout=out_stream, stderr=subprocess.PIPE,
                              env=self._env(), cwd="/", check=False,
                              timeout=self.get_option("command_timeout") or None)
        if proc.returncode != 0:
            raise AnsibleError(f"chroot: {script!r} failed ({proc.returncode}): "
                               f"{to_native(proc.stderr).strip()}")

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.root)
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound(f"chroot: file or module does not exist: {in_path}")
        with open(b_in, "rb") as src:
            self._run_in_tree(f"cat > {shlex.quote(out_path)}", in_stream=src)

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.root)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
            self._run_in_tree(f"cat -- {shlex.quote(in_path)}", out_stream=dst)

    def close(self):
        self._connected = False
