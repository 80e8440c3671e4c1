"""Keep-alive answers: the agent side (``etsfctl keepalive probe|status``).

The kernel answers keep-alive OPTIONS only while ``etsf_ctl.proxy_alive_until_ns`` lies in the
future.  ``sip`` builds the probe's OPTIONS and reads its answer, ``probe`` sends it to the
local proxy over UDP, ``state`` keeps the prober's state file and heartbeat, ``prober`` is the
loop that decides what to write into etsf_ctl, ``commands`` the CLI.
"""
