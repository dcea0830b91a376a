"""This device's identity on disk: the private keys under `Home.keys` as PKCS#8 PEM files, mode
0600 in a 0700 directory, and the public metadata in the home's TinyDB documents (table
"identity").

Why apart from `space.identity`: that module is pure (keys, ids, signatures); this is its thin
I/O (issue 14). Files are written temp + fsync + link (`mocksync.fsatomic`, exclusive), so a
crash leaves either no key or a whole one, and a key is never overwritten.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..fsatomic import put_file
from ..paths import Home
from ..space.errors import IdentityError, NotInitialisedError
from ..space.fields import check_name
from ..space.identity import BOX_KEY_FILE, IDENTITY_TABLE, SIGN_KEY_FILE, Identity


def _ensure_keys_dir(home: Home) -> Path:
    home.ensure()
    os.chmod(home.keys, 0o700)
    return home.keys


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 holding `data`, atomically and without clobbering
    (FileExistsError when it exists: a key is never overwritten)."""
    put_file(path, data, 0o600, exclusive=True)


def _pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read_private(path: Path, kind: type) -> Any:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise IdentityError(
            f"key file {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"key file {path} is damaged ({exc}); restore it from a backup") from None
    if not isinstance(key, kind):
        raise IdentityError(f"key file {path} holds the wrong kind of key")
    return key


def _read_meta(home: Home) -> dict[str, Any] | None:
    from ..store.docs import open_docs

    if not home.docs.exists():
        return None
    with open_docs(home.docs) as db:
        docs = db.table(IDENTITY_TABLE).all()
    return dict(docs[0]) if docs else None


def has_identity(home: Home) -> bool:
    return _read_meta(home) is not None


def load_identity(home: Home) -> Identity:
    """This home's identity, checked: key files private, public keys matching the metadata."""
    meta = _read_meta(home)
    if meta is None:
        raise NotInitialisedError(
            f"this device has no identity yet (home {home.root}); run `mocksync init` first"
        )
    sign = _read_private(home.keys / SIGN_KEY_FILE, Ed25519PrivateKey)
    box = _read_private(home.keys / BOX_KEY_FILE, X25519PrivateKey)
    if sign is None or box is None:
        raise IdentityError(
            f"this device's private key files are missing from {home.keys}; "
            "restore them from a backup (the device id cannot be recovered without them)"
        )
    ident = Identity(meta["name"], sign, box, meta.get("created", 0.0), meta.get("member_name"))
    if ident.device_id != meta.get("device_id") or ident.box_public.hex() != meta.get("box_public"):
        raise IdentityError(
            f"the key files in {home.keys} do not belong to device {meta.get('device_id')}; "
            "restore the matching key files"
        )
    return ident


def create_identity(home: Home, name: str, *, member_name: str | None = None,
                    now: float | None = None) -> Identity:
    """Make this device's keys and record its metadata. Refuses if the home has an identity.

    If a previous `init` was interrupted after writing both key files but before the metadata,
    those keys are reused (they never left this machine), so a retry finishes the job.
    """
    from ..store.docs import open_docs

    check_name(name, "device name", IdentityError)
    existing = _read_meta(home)
    if existing is not None:
        raise IdentityError(
            f"this home is already initialised as device {existing.get('device_id')} "
            f"({existing.get('name')!r}); use another --home for another device"
        )
    keys = _ensure_keys_dir(home)
    sign = _read_private(keys / SIGN_KEY_FILE, Ed25519PrivateKey)
    box = _read_private(keys / BOX_KEY_FILE, X25519PrivateKey)
    if sign is None:
        sign = Ed25519PrivateKey.generate()
        _write_private(keys / SIGN_KEY_FILE, _pem(sign))
    if box is None:
        box = X25519PrivateKey.generate()
        _write_private(keys / BOX_KEY_FILE, _pem(box))
    ident = Identity(name, sign, box, time.time() if now is None else now, member_name)
    with open_docs(home.docs) as db:
        table = db.table(IDENTITY_TABLE)
        table.truncate()
        table.insert(ident.metadata())
    return ident


__all__ = ["create_identity", "has_identity", "load_identity"]
