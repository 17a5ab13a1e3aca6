"""One run, one writer: a lock file in the run directory names the process that writes it.

``RUN_DIR/.run.lock`` holds {pid, host, started}. It is created atomically when a run starts writing the directory
and removed when the process ends. A second process that would write or clean the same directory (a resumed run, a
re-submitted job) is refused while the lock's process is alive; a lock whose process is gone (on this host) is stale:
it is reported and taken over. A lock of another host cannot be checked: the message says how to remove it.
"""

import datetime
import json
import os
import socket

from dnnlib.util import process_exists

LOCK_NAME = ".run.lock"


class RunLockedError(RuntimeError):
    """Another live process writes this run directory; the message names it."""


def holder(run_dir):
    """The lock's {pid, host, started} if another live process (or a process of another host) holds it, else None
    (no lock, our own, or a stale one)."""
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        with open(path, "r", encoding="utf-8") as f:
            info = json.load(f)
        pid, host = int(info["pid"]), str(info["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # An unreadable lock (a kill while it was written) protects nothing.
    if host == socket.gethostname() and (pid == os.getpid() or not process_exists(pid)):
        return None
    return dict(info, pid=pid, host=host)


def describe(info):
    return f"process {info['pid']} on {info['host']} (started {info.get('started', '?')})"


def check_not_live(run_dir, action):
    """Refuse ``action`` (e.g. 'resume it') while another live process writes run_dir."""
    info = holder(run_dir)
    if info is not None:
        raise RunLockedError(f"{run_dir} is being written by {describe(info)}; stop that run before you {action} "
                             f"(if it is gone, e.g. on another machine, delete {os.path.join(run_dir, LOCK_NAME)})")


def acquire(run_dir, log=print):
    """Take the lock of run_dir for this process (refused while another live process holds it)."""
    path = os.path.join(run_dir, LOCK_NAME)
    check_not_live(run_dir, "write it")
    if os.path.exists(path):
        log(f"Notice: removed a stale run lock ({path}): its process is gone")
        os.remove(path)
    info = dict(pid=os.getpid(), host=socket.gethostname(),
                started=datetime.datetime.now().isoformat(timespec="seconds"))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # Another process took it between our check and now.
        check_not_live(run_dir, "write it")
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return path


def release(run_dir):
    """Remove our lock of run_dir (another process's lock is left alone)."""
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        with open(path, "r", encoding="utf-8") as f:
            info = json.load(f)
        if int(info.get("pid", -1)) == os.getpid() and info.get("host") == socket.gethostname():
            os.remove(path)
    except (OSError, ValueError, TypeError):
        pass
