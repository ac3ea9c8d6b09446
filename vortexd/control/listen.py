"""The control socket's file: bound with the right mode and group before anyone can reach it,
never replacing a live daemon's socket or a file that is not a socket; and who is on the other end."""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import stat
import struct
from pathlib import Path

import structlog

from vortexd.control.protocol import Peer

UNIX_PATH_MAX_BYTES = 107  # sun_path is 108 bytes including the terminating NUL

log = structlog.get_logger("vortexd.control")


class ControlServerError(RuntimeError):
    """The server cannot start: the socket path is taken, too long, or not a socket."""


def peer_of(writer: asyncio.StreamWriter) -> Peer | None:
    """SO_PEERCRED of the connection (pid, uid, gid), or None where the platform lacks it."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
    except (AttributeError, OSError, struct.error):
        return None
    return Peer(pid=pid, uid=uid, gid=gid)


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch a live socket or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlServerError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: left behind by a daemon that died
        return
    except OSError as exc:
        raise ControlServerError(f"cannot probe existing socket {path}: {exc}") from None
    finally:
        probe.close()
    raise ControlServerError(f"another process is already serving on {path}")


def bind_socket(path: Path, mode: int, group: str | int | None, backlog: int = 128) -> socket.socket:
    """A listening socket at `path` that is never reachable with the wrong mode or group.

    It is bound under a temporary name, chmod/chgrp'd, then renamed into place, so no client can
    connect in the window between bind and chmod.
    """
    if len(os.fsencode(path)) > UNIX_PATH_MAX_BYTES:
        raise ControlServerError(f"socket path {path} is longer than {UNIX_PATH_MAX_BYTES} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    temporary = path.parent / f".vx{os.getpid()}.tmp"
    if len(os.fsencode(temporary)) > UNIX_PATH_MAX_BYTES:
        temporary = path  # no room for the temporary name: bind in place, chmod right after
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        gid = _group_id(group)
        if gid is not None:
            try:
                os.chown(temporary, -1, gid)
            except PermissionError as exc:
                log.warning("control_socket_chgrp_failed", path=str(path), group=group, error=str(exc))
        if temporary != path:
            os.rename(temporary, path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return sock


def _group_id(group: str | int | None) -> int | None:
    """The gid of `group` if it exists; a missing group is logged and skipped (e.g. on a dev box)."""
    if group is None:
        return None
    try:
        return grp.getgrgid(group).gr_gid if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("control_socket_group_missing", group=group)
        return None
