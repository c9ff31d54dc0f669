"""A small filesystem for the cache folder (a tmpfs of a given size), for root and for a
developer without it.

Without root, the tmpfs is mounted in a mount namespace of its own, owned by a user
namespace in which the caller is root (``unshare --user --map-root-user --mount``): the
kernel allows that to an ordinary user unless unprivileged user namespaces are turned off
(``kernel.unprivileged_userns_clone=0`` on older Debian,
``kernel.apparmor_restrict_unprivileged_userns=1`` on Ubuntu 24.04, or a container's
seccomp profile). The mount is seen only inside: the proxy is started there (``enter()``
prefixes its command line with ``nsenter``), and so is whatever changes the mount. A
holder process keeps the namespace until ``close()`` (or until the test process dies: it
waits on its standard input); the mount goes with the last process inside it, so nothing is
left mounted, even after a kill.

As root, where user namespaces are refused too (a container), the tmpfs is mounted where
everyone sees it and unmounted by ``close()``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Protocol

MOUNTED = "mounted"
START_TIMEOUT = 10.0


class DiskUnavailable(Exception):
    """No way to mount a small filesystem here; the message says what was tried."""


class SmallDisk(Protocol):
    path: Path

    def enter(self) -> list[str]:
        """The prefix of a command line that runs it where ``path`` is the small disk."""
        ...

    def remount_read_only(self) -> None: ...

    def remount_read_write(self) -> None: ...

    def close(self) -> None: ...


class NamespaceDisk:
    """A tmpfs in a user and mount namespace of its own, held by a process of ours."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        script = f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$0" && echo {MOUNTED} && read _'
        self.holder = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.error = ""
        assert self.holder.stdout is not None  # a pipe, asked for above
        line = self.holder.stdout.readline().strip()  # ends at once if the mount failed
        if line != MOUNTED:
            self.close()
            raise DiskUnavailable(f"unshare --user --mount: {self.error.strip() or 'failed'}")

    def enter(self) -> list[str]:
        # --preserve-credentials: the caller's uid, which is root in there; nsenter's own
        # setgroups would be refused (unshare --map-root-user denies it).
        pid = str(self.holder.pid)
        return ["nsenter", "--preserve-credentials", "-t", pid, "--user", "--mount", "--"]

    def remount_read_only(self) -> None:
        # A bind remount: the mount itself turns read only, which the namespace's root may
        # do (a plain ``remount,ro`` of the tmpfs is refused there).
        self._remount("remount,bind,ro")

    def remount_read_write(self) -> None:
        self._remount("remount,bind,rw")

    def _remount(self, options: str) -> None:
        command = [*self.enter(), "mount", "-o", options, str(self.path)]
        subprocess.run(command, check=True, capture_output=True, timeout=START_TIMEOUT)

    def close(self) -> None:
        """End the holder (its ``read`` ends with its standard input), and so the
        namespace once the processes started in it are gone; keep what it wrote to
        stderr in ``error``."""
        try:
            _, self.error = self.holder.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            _, self.error = self.holder.communicate(timeout=START_TIMEOUT)


class HostDisk:
    """A tmpfs mounted for everyone: root only."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise DiskUnavailable(f"mount -t tmpfs: {done.stderr.strip()}")

    def enter(self) -> list[str]:
        return []

    def remount_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def remount_read_write(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def small_disk(path: Path, size: str) -> SmallDisk:
    """A tmpfs of ``size`` (``1m``) at ``path`` (an empty folder), in a namespace of its
    own where the kernel allows it, else mounted by root; ``DiskUnavailable`` if neither."""
    try:
        return NamespaceDisk(path, size)
    except (DiskUnavailable, OSError) as exc:
        if os.geteuid() != 0:
            raise DiskUnavailable(
                f"{exc}; a small tmpfs needs unprivileged user namespaces or root"
            ) from None
    return HostDisk(path, size)
