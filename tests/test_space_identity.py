"""Device identity: typeable ids that catch typos, private key files, sign/verify."""

from __future__ import annotations

import itertools
import os
import stat

import pytest

from mocksync.paths import Home
from mocksync.space.errors import DeviceIdError, IdentityError, NotInitialisedError
from mocksync.space.identity import (
    ALPHABET,
    BOX_KEY_FILE,
    SIGN_KEY_FILE,
    Identity,
    device_id_for,
    is_device_id,
    parse_device_id,
    verify_signature,
)
from mocksync.spaceio.identityfiles import create_identity, has_identity, load_identity


def _ids(n: int) -> list[str]:
    return [device_id_for(bytes([i, 7]) * 16) for i in range(n)]


def test_device_id_shape_and_normalisation():
    did = device_id_for(b"\x01" * 32)
    assert len(did) == 23 and did.count("-") == 3
    assert all(len(g) == 5 for g in did.split("-"))
    assert set(did.replace("-", "")) <= set(ALPHABET)
    assert device_id_for(b"\x01" * 32) == did  # stable
    assert device_id_for(b"\x02" * 32) != did
    raw = did.replace("-", "")
    assert parse_device_id(raw.lower()) == did
    assert parse_device_id(f"  {raw[:10]} {raw[10:]} ") == did
    assert parse_device_id(did.replace("0", "o").replace("1", "l")) == did  # Crockford aliases
    assert is_device_id(did) and not is_device_id(raw)


def test_every_single_typo_is_caught():
    for did in _ids(20):
        raw = did.replace("-", "")
        for pos in range(len(raw)):
            for ch in ALPHABET:
                if ch == raw[pos]:
                    continue
                typo = raw[:pos] + ch + raw[pos + 1:]
                with pytest.raises(DeviceIdError, match="typo"):
                    parse_device_id(typo)


def test_every_transposition_is_caught():
    for did in _ids(20):
        raw = list(did.replace("-", ""))
        for i, j in itertools.combinations(range(len(raw)), 2):
            if raw[i] == raw[j]:
                continue
            swapped = raw.copy()
            swapped[i], swapped[j] = swapped[j], swapped[i]
            with pytest.raises(DeviceIdError, match="typo"):
                parse_device_id("".join(swapped))


def test_bad_device_id_input_gets_clear_errors():
    with pytest.raises(DeviceIdError, match="expected 20"):
        parse_device_id("ABCDE-FGHJK")
    with pytest.raises(DeviceIdError, match="not a device id character"):
        parse_device_id("ABCDE-FGHJK-MNPQR-STVW!")
    with pytest.raises(DeviceIdError, match="U"):
        parse_device_id("UUUUU-UUUUU-UUUUU-UUUUU")
    with pytest.raises(DeviceIdError):
        parse_device_id("x" * 1000)


def test_sign_and_verify():
    ident = Identity.generate("laptop", now=1.0)
    sig = ident.sign(b"hello")
    assert verify_signature(ident.sign_public, b"hello", sig)
    assert not verify_signature(ident.sign_public, b"hellO", sig)
    other = Identity.generate("other", now=1.0)
    assert not verify_signature(other.sign_public, b"hello", sig)
    assert not verify_signature(ident.sign_public, b"hello", sig[:-1])
    assert not verify_signature(b"short", b"hello", sig)
    assert ident.device_id == device_id_for(ident.sign_public)
    assert "PRIVATE" not in repr(ident) and ident.device_id in repr(ident)


def test_create_writes_private_key_files_and_load_roundtrips(tmp_path):
    home = Home(tmp_path / "home")
    assert not has_identity(home)
    with pytest.raises(NotInitialisedError, match="mocksync init"):
        load_identity(home)
    ident = create_identity(home, "laptop", member_name="Alice", now=5.0)
    for name in (SIGN_KEY_FILE, BOX_KEY_FILE):
        mode = stat.S_IMODE((home.keys / name).stat().st_mode)
        assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(home.keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.docs.stat().st_mode) == 0o600
    loaded = load_identity(home)
    assert loaded.device_id == ident.device_id
    assert loaded.box_public == ident.box_public
    assert loaded.name == "laptop" and loaded.member_name == "Alice" and loaded.created == 5.0
    # public metadata, no secrets, in the documents
    text = home.docs.read_text()
    assert ident.device_id in text and ident.sign_public.hex() in text
    assert "PRIVATE" not in text


def test_create_refuses_when_an_identity_exists(tmp_path):
    home = Home(tmp_path)
    first = create_identity(home, "laptop")
    with pytest.raises(IdentityError, match="already initialised"):
        create_identity(home, "again")
    assert load_identity(home).device_id == first.device_id


def test_load_refuses_key_files_readable_by_others(tmp_path):
    home = Home(tmp_path)
    create_identity(home, "laptop")
    os.chmod(home.keys / SIGN_KEY_FILE, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(home)


def test_load_refuses_swapped_key_files(tmp_path):
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    create_identity(a, "a")
    create_identity(b, "b")
    (a.keys / SIGN_KEY_FILE).unlink()
    os.link(b.keys / SIGN_KEY_FILE, a.keys / SIGN_KEY_FILE)
    with pytest.raises(IdentityError, match="do not belong"):
        load_identity(a)


def test_bad_names_are_refused(tmp_path):
    for bad in ("", " padded", "evil\x1b[2J", "x" * 65):
        with pytest.raises(IdentityError):
            create_identity(Home(tmp_path / "h"), bad)
    assert not has_identity(Home(tmp_path / "h"))
