"""Files the agent's service user must read, written by root (``provision``, ``setup``).

Run as root, provisioning writes the key 0600 root:root: the agent, running as ``homewatt``,
could not start. These files are made readable by the service user's group, never by others.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.doctor import ServiceUser, may_access
from edge_agent.errors import ConfigError


def share_with_service_user(config_path: Path, user: ServiceUser,
                            say: Callable[[str], None] = print) -> list[Path]:
    """Let the service user read the config and TLS files provisioning wrote (as root they
    come out root-owned, the key 0600: the agent, running as ``homewatt``, could not start).
    Group-readable by the user's group, never world-readable; returns what changed."""
    if os.geteuid() != 0 or user.uid == 0:
        return []
    try:
        config = load_config(config_path)
        group = pwd.getpwnam(user.name).pw_gid
    except (ConfigError, KeyError):
        return []
    changed = []
    for path in (config_path, config.mqtt.cert_file, config.mqtt.key_file, config.mqtt.ca_file):
        if path is None or not path.exists():
            continue
        st = path.stat()
        if may_access(st.st_mode, st.st_uid, st.st_gid, user, 0o4):
            continue
        os.chown(path, -1, group)
        os.chmod(path, (st.st_mode & 0o750) | 0o040)
        changed.append(path)
        say(f"made {path} readable by {user.name} (group, mode "
            f"{oct((st.st_mode & 0o750) | 0o040)})")
    return changed
