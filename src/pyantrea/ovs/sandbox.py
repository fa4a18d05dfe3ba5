"""A private OVS: one ovsdb-server and one ovs-vswitchd whose sockets, pidfiles, logs and database
all live in one run directory.

``datapath="dummy"`` (the default) runs ovs-vswitchd with ``--enable-dummy=override
--disable-system --disable-system-route``: every port type (system, internal, geneve...) becomes a
dummy port, no root and no network are needed, and ofport requests, flows and
``ofproto/trace`` behave as on a real node. ``datapath="netdev"`` runs the real userspace
datapath (root; taps, AF_PACKET), inside ``netns`` if one is given.

::

    with Sandbox(Path(tempfile.mkdtemp(prefix="pa-"))) as sb:
        sb.db.transact(sb.db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"]))
        sb.bridge("br-int").replace_flows(["table=0,priority=0,actions=drop"])
        print(sb.trace("br-int", "in_port=1,ip,nw_ttl=64"))

A user's shell reaches the sandbox with ``OVS_RUNDIR=<rundir>`` (see :meth:`Sandbox.env`):
plain ``ovs-vsctl``, ``ovs-ofctl dump-flows br-int`` and ``ovs-appctl ...`` then all target it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from pyantrea.errors import OVSError
from pyantrea.ovs.ofctl import OFBridge
from pyantrea.ovs.unixctl import Unixctl
from pyantrea.ovs.vsctl import OVSDB, run_tool
from pyantrea.process import cmdline as process_cmdline
from pyantrea.process import exited, start_time, terminate, wait_exited

Datapath = Literal["dummy", "netdev"]

DEFAULT_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")

SUN_PATH_MAX = 107
"""Longest unix socket path the kernel accepts (``sun_path`` is 108 bytes with the NUL)."""

MAX_BRIDGE_NAME = 15  # IFNAMSIZ - 1: a bridge name is also a netdev name


class Sandbox:
    """A private ovsdb-server + ovs-vswitchd pair rooted at ``rundir``.

    Files in ``rundir``: ``conf.db``, ``db.sock``, ``ovsdb-server.{ctl,pid,log}``,
    ``ovs-vswitchd.{ctl,pid,log}``, ``<bridge>.mgmt``/``.snoop`` (created by ovs-vswitchd because
    ``OVS_RUNDIR`` points here), and ``<daemon>.<pid>.ctl`` symlinks so that plain
    ``OVS_RUNDIR=... ovs-appctl`` finds the daemons. Keep ``rundir`` short (e.g.
    ``tempfile.mkdtemp(prefix="pa-")``): every socket path must fit in ``sun_path``.
    """

    def __init__(self, rundir: Path | str, netns: str | None = None, datapath: Datapath = "dummy",
                 *, schema: Path | str = DEFAULT_SCHEMA, extra_vswitchd_args: tuple[str, ...] = ()) -> None:
        if datapath not in ("dummy", "netdev"):
            raise ValueError(f"datapath must be 'dummy' or 'netdev', not {datapath!r}")
        self.rundir = Path(rundir).absolute()
        self.netns = netns
        self.datapath: Datapath = datapath
        self.schema = Path(schema)
        self.extra_vswitchd_args = tuple(extra_vswitchd_args)
        self.dbfile = self.rundir / "conf.db"
        self.db_sock = self.rundir / "db.sock"
        self.ovsdb_ctl = self.rundir / "ovsdb-server.ctl"
        self.ovsdb_pidfile = self.rundir / "ovsdb-server.pid"
        self.ovsdb_log = self.rundir / "ovsdb-server.log"
        self.vswitchd_ctl = self.rundir / "ovs-vswitchd.ctl"
        self.vswitchd_pidfile = self.rundir / "ovs-vswitchd.pid"
        self.vswitchd_log = self.rundir / "ovs-vswitchd.log"
        self.db = OVSDB(self.db_sock)
        self._unixctl: Unixctl | None = None
        self._check_paths()

    def __repr__(self) -> str:
        ns = f", netns={self.netns!r}" if self.netns else ""
        return f"Sandbox({str(self.rundir)!r}{ns}, datapath={self.datapath!r})"

    # ------------------------------------------------------------------ paths

    def _check_paths(self) -> None:
        longest = max(
            [self.db_sock, self.ovsdb_ctl, self.vswitchd_ctl,
             self.rundir / ("x" * MAX_BRIDGE_NAME + ".snoop")],
            key=lambda p: len(os.fsencode(str(p))),
        )
        n = len(os.fsencode(str(longest)))
        if n > SUN_PATH_MAX:
            raise OVSError(
                f"OVS sandbox rundir {self.rundir} is too long: socket path {longest} would be {n} "
                f"bytes, the unix socket limit is {SUN_PATH_MAX}. Use a short directory "
                f"(e.g. tempfile.mkdtemp(prefix='pa-') under /tmp)."
            )

    def mgmt_socket(self, bridge: str) -> Path:
        return self.rundir / f"{bridge}.mgmt"

    def bridge(self, name: str) -> OFBridge:
        """The OpenFlow side of bridge ``name`` (``unix:RUNDIR/<name>.mgmt``)."""
        if len(name) > MAX_BRIDGE_NAME:
            raise OVSError(f"bridge name {name!r} is longer than {MAX_BRIDGE_NAME} characters")
        return OFBridge(self.mgmt_socket(name))

    # ------------------------------------------------------------------ user shell

    def env(self) -> dict[str, str]:
        """Environment that points plain OVS tools at this sandbox::

            export OVS_RUNDIR=<rundir>
            ovs-vsctl show                      # default db: unix:$OVS_RUNDIR/db.sock
            ovs-ofctl dump-flows br-int         # unix:$OVS_RUNDIR/br-int.mgmt
            ovs-appctl ofproto/trace br-int ... # via $OVS_RUNDIR/ovs-vswitchd.pid + <pid>.ctl link

        Explicit forms that need no environment: :meth:`tool_argv`.
        """
        return {"OVS_RUNDIR": str(self.rundir)}

    def tool_argv(self, tool: Literal["ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ovsdb-appctl"]) -> list[str]:
        """The argv prefix that targets this sandbox explicitly (for ovs-ofctl, pass the target
        ``unix:RUNDIR/<bridge>.mgmt`` yourself, see :meth:`mgmt_socket`)."""
        if tool == "ovs-vsctl":
            return ["ovs-vsctl", f"--db=unix:{self.db_sock}"]
        if tool == "ovs-appctl":
            return ["ovs-appctl", "-t", str(self.vswitchd_ctl)]
        if tool == "ovsdb-appctl":
            return ["ovs-appctl", "-t", str(self.ovsdb_ctl)]
        return ["ovs-ofctl"]

    # ------------------------------------------------------------------ lifecycle

    def _wrap(self, argv: list[str]) -> list[str]:
        env = ["env", f"OVS_RUNDIR={self.rundir}", f"OVS_DBDIR={self.rundir}", f"OVS_LOGDIR={self.rundir}"]
        if self.netns:
            return ["ip", "netns", "exec", self.netns, *env, *argv]
        return [*env, *argv]

    def start(self) -> Self:
        """Create the database if needed and start both daemons (each detaches once ready)."""
        if self.is_running():
            return self
        self.rundir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.dbfile.exists():
                run_tool(["ovsdb-tool", "create", str(self.dbfile), str(self.schema)])
            if not _alive(self._pid(self.ovsdb_pidfile), "ovsdb-server", self.rundir):
                run_tool(self._wrap([
                    "ovsdb-server", str(self.dbfile), f"--remote=punix:{self.db_sock}",
                    f"--unixctl={self.ovsdb_ctl}", f"--pidfile={self.ovsdb_pidfile}",
                    "-vconsole:off", f"--log-file={self.ovsdb_log}", "--detach", "--no-chdir",
                ]), timeout=30)
                self.db.transact([["init"]], no_wait=True)
                self._link_ctl("ovsdb-server", self.ovsdb_pidfile, self.ovsdb_ctl)
            if self.vswitchd_pid is None:
                self._start_vswitchd()
        except OVSError as e:
            self.stop()
            raise OVSError(f"{e}\n(sandbox {self.rundir}; logs: {self._log_tail()})") from e
        return self

    def _start_vswitchd(self) -> None:
        argv = ["ovs-vswitchd", f"unix:{self.db_sock}"]
        if self.datapath == "dummy":
            argv += ["--enable-dummy=override", "--disable-system", "--disable-system-route"]
        argv += [
            f"--unixctl={self.vswitchd_ctl}", f"--pidfile={self.vswitchd_pidfile}",
            "-vconsole:off", f"--log-file={self.vswitchd_log}", "--detach", "--no-chdir",
            *self.extra_vswitchd_args,
        ]
        run_tool(self._wrap(argv), timeout=30)
        self._link_ctl("ovs-vswitchd", self.vswitchd_pidfile, self.vswitchd_ctl)

    def _link_ctl(self, name: str, pidfile: Path, ctl: Path) -> None:
        """``ovs-appctl -t NAME`` looks for ``$OVS_RUNDIR/NAME.<pid>.ctl``: point it at ``ctl``."""
        for old in self.rundir.glob(f"{name}.*.ctl"):
            if old.is_symlink():
                old.unlink(missing_ok=True)
        pid = self._pid(pidfile)
        if pid is not None:
            try:
                (self.rundir / f"{name}.{pid}.ctl").symlink_to(ctl.name)
            except OSError:
                pass  # a convenience only

    def _log_tail(self) -> str:
        parts = []
        for log in (self.ovsdb_log, self.vswitchd_log):
            try:
                lines = [ln for ln in log.read_text(errors="replace").splitlines() if "|ERR|" in ln or "|EMER|" in ln]
            except OSError:
                continue
            parts.append(f"{log}" + (": " + " / ".join(lines[-3:]) if lines else ""))
        return "; ".join(parts) or "none"

    @staticmethod
    def _pid(pidfile: Path) -> int | None:
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def vswitchd_pid(self) -> int | None:
        pid = self._pid(self.vswitchd_pidfile)
        return pid if _alive(pid, "ovs-vswitchd", self.rundir) else None

    @property
    def ovsdb_pid(self) -> int | None:
        pid = self._pid(self.ovsdb_pidfile)
        return pid if _alive(pid, "ovsdb-server", self.rundir) else None

    def is_running(self) -> bool:
        """Both daemons alive (checked through our own pidfiles)."""
        return self.ovsdb_pid is not None and self.vswitchd_pid is not None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both daemons, ovs-vswitchd first: ``exit --cleanup`` / ``exit`` over unixctl, wait
        up to ``timeout`` until it is gone (every thread of it), then SIGTERM and SIGKILL (2 s each)
        only the pid from our own pidfile. Returns when both are gone; raises OVSError naming the
        one that is not (after the other was stopped too). Idempotent."""
        self._close_unixctl()
        stuck: list[str] = []
        for pid, name, ctl, args in ((self.vswitchd_pid, "ovs-vswitchd", self.vswitchd_ctl, ["exit", "--cleanup"]),
                                     (self.ovsdb_pid, "ovsdb-server", self.ovsdb_ctl, ["exit"])):
            if pid is None:
                continue
            start = start_time(pid)  # identity, taken while it is certainly ours
            self._appctl_quiet(ctl, args, timeout)
            if not _terminate(pid, start, timeout):
                stuck.append(f"{name} (pid {pid}, {self.rundir})")
        if stuck:
            raise OVSError(f"{' and '.join(stuck)} did not exit after SIGKILL")
        for name in ("ovs-vswitchd", "ovsdb-server"):
            for link in self.rundir.glob(f"{name}.*.ctl"):
                if link.is_symlink():
                    link.unlink(missing_ok=True)

    @staticmethod
    def _appctl_quiet(ctl: Path, args: list[str], timeout: float) -> None:
        try:
            subprocess.run(["ovs-appctl", f"--timeout={max(1, int(timeout))}", "-t", str(ctl), *args],
                           capture_output=True, timeout=timeout + 2, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def restart_vswitchd(self, timeout: float = 5.0) -> None:
        """Crash ovs-vswitchd (SIGKILL of our pid) and start it again on the same database:
        what a node's OVS restart does. Flows, tunnel ARP and conntrack are lost; OVSDB is kept."""
        self._close_unixctl()
        pid = self.vswitchd_pid
        if pid is not None and terminate({pid: start_time(pid)}, timeout, sig=signal.SIGKILL):
            raise OVSError(f"ovs-vswitchd (pid {pid}, {self.rundir}) did not exit after SIGKILL")
        self._start_vswitchd()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ unixctl

    def unixctl(self) -> Unixctl:
        """A cached, persistent unixctl connection to ovs-vswitchd."""
        if self._unixctl is None:
            self._unixctl = Unixctl(self.vswitchd_ctl)
        return self._unixctl

    def _close_unixctl(self) -> None:
        if self._unixctl is not None:
            self._unixctl.close()
            self._unixctl = None

    def appctl(self, command: str, *args: str) -> str:
        """Any ovs-vswitchd unixctl command over the persistent connection."""
        return self.unixctl().call(command, list(args))

    def trace(self, bridge: str, flow: str, ct_next: list[str] | tuple[str, ...] = ()) -> str:
        """``ofproto/trace BRIDGE FLOW [--ct-next X]...``: OVS's text verbatim.

        Raises :class:`OVSError` with OVS's message when it rejects the flow
        (``Bad openflow flow syntax: ...``)."""
        args = [bridge, flow]
        for state in ct_next:
            args += ["--ct-next", state]
        return self.unixctl().call("ofproto/trace", args)


# ---------------------------------------------------------------------- process helpers


def _alive(pid: int | None, name: str, rundir: Path) -> bool:
    """``pid`` is a live ``name`` process started for ``rundir`` (a zombie is not, once its every
    thread has exited: `pyantrea.process.exited`)."""
    if pid is None or pid <= 0 or exited(pid, None):
        return False
    cmdline = process_cmdline(pid)
    if not cmdline:
        # an exiting process has released its memory (empty cmdline) but is not gone yet: still
        # ours while its command name matches
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                return f.read().decode(errors="replace").strip() == name[:15]
        except OSError:
            return False
    # guards against a recycled pid: the process must be ours
    return name in cmdline and str(rundir) in cmdline


def _terminate(pid: int, start: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` for the process (pid, start) to exit as it was asked to, then SIGTERM
    and SIGKILL it (2 s each). True when it is gone."""
    if start is None or not wait_exited({pid: start}, timeout):
        return True
    return not terminate({pid: start}, 2.0, 2.0)
