#!/usr/bin/env python3
"""An unprivileged local user racing guestd (tests/tests/hostile_local.rs).

Runs as uid 65534 in its own home inside a sandbox root and, until the stop file appears,
swaps every path guestd may write below that home between a real directory or file and
something that would turn a root-run write into an attack: symlinks to root's files (as guest
paths, as host paths and relative), FIFOs, sockets, device nodes and hard links to root's files
(the last two prepared by root in `stash/`, which the attacker renames into place and back, as
it could not make them itself).

usage: attacker.py HOME STASH STOP HOST_ROOT SEED
"""

import os
import random
import shutil
import socket
import stat
import sys

HOME, STASH, STOP, HOST_ROOT, SEED = sys.argv[1:6]
rnd = random.Random(int(SEED))

DIR_LINKS = [
    "/root/.ssh",
    "/root",
    "/etc",
    "/var/lib/guestd",
    "../../root/.ssh",
    "../../../../../../etc",
    HOST_ROOT + "/root/.ssh",
    HOST_ROOT + "/etc",
]
FILE_LINKS = [
    "/root/.ssh/authorized_keys",
    "/etc/shadow",
    "/etc/passwd",
    "/etc/hostname",
    "../../../etc/shadow",
    "../../root/.ssh/authorized_keys",
    HOST_ROOT + "/etc/shadow",
    HOST_ROOT + "/root/.ssh/authorized_keys",
    "/dev/zero",
]

# Root-made things in the stash (device nodes, hard links to root's files): moved, never made.
stashed = {}
for name in os.listdir(STASH):
    path = os.path.join(STASH, name)
    stashed[os.lstat(path).st_ino] = path

trash = os.path.join(HOME, ".trash")
os.makedirs(trash, exist_ok=True)
counter = 0
sockets = []


def clear(path):
    """Take whatever is at `path` away (stash entries go back to the stash)."""
    global counter
    try:
        st = os.lstat(path)
    except OSError:
        return
    try:
        if st.st_ino in stashed and not os.path.lexists(stashed[st.st_ino]):
            os.rename(path, stashed[st.st_ino])
        elif stat.S_ISDIR(st.st_mode):
            try:
                shutil.rmtree(path)
            except OSError:
                # A directory guestd made (root's, not empty): out of the way.
                counter += 1
                os.rename(path, os.path.join(trash, str(counter)))
        else:
            os.unlink(path)
    except OSError:
        pass


def place_special(path, kinds):
    """A link, FIFO, socket or stash entry at `path`."""
    kind = rnd.choice(kinds)
    try:
        if kind == "dirlink":
            os.symlink(rnd.choice(DIR_LINKS), path)
        elif kind == "filelink":
            os.symlink(rnd.choice(FILE_LINKS), path)
        elif kind == "fifo":
            os.mkfifo(path, 0o666)
        elif kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            sockets.append(s)
            if len(sockets) > 50:
                sockets.pop(0).close()
        elif kind == "stash":
            free = [p for p in stashed.values() if os.path.lexists(p)]
            if free:
                os.rename(rnd.choice(free), path)
        elif kind == "file":
            with open(path, "w") as f:
                f.write("ssh-ed25519 AAAA attacker\n")
    except OSError:
        pass


def place_dir(path):
    """A real directory (most of the time), or something that is not one."""
    clear(path)
    if rnd.random() < 0.5:
        try:
            os.mkdir(path, 0o755)
        except OSError:
            pass
        return True
    place_special(path, ["dirlink", "dirlink", "fifo", "socket", "stash", "file"])
    return False


def place_file(path):
    clear(path)
    place_special(path, ["filelink", "filelink", "fifo", "socket", "stash", "stash", "file"])


iterations = 0
while not os.path.exists(STOP):
    iterations += 1
    # ~/.ssh/authorized_keys (file injection, qga SSH keys)
    ssh = os.path.join(HOME, ".ssh")
    if rnd.random() < 0.3 or not os.path.isdir(ssh) or os.path.islink(ssh):
        if place_dir(ssh):
            place_file(os.path.join(ssh, "authorized_keys"))
    else:
        place_file(os.path.join(ssh, "authorized_keys"))
    # ~/dir/sub/file (file injection below directories it creates)
    d = os.path.join(HOME, "dir")
    if rnd.random() < 0.2 and place_dir(d):
        if place_dir(os.path.join(d, "sub")):
            place_file(os.path.join(d, "sub", "file"))
    elif os.path.isdir(os.path.join(d, "sub")) and not os.path.islink(d):
        place_file(os.path.join(d, "sub", "file"))
    # ~/update-state (an update staged in a tree the user controls)
    if rnd.random() < 0.2:
        state = os.path.join(HOME, "update-state")
        if place_dir(state):
            place_dir(os.path.join(state, "staged.1.0"))

with open(os.path.join(HOME, "iterations"), "w") as f:
    f.write(str(iterations))
