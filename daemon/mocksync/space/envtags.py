"""Env tags: the name an environment's chains go by wherever its id must not be seen.

Why here, in the space package: a tag is derived from the space's content key, and two
parties key decisions by it: the relay (which stores and serves envelopes under a tag and
never learns environment ids) and every member (whose removal cuts, `space.membership`
`covers`, name environments by tag so the relay applies the same cut). Both sides need the
one derivation, and it belongs with the keys, below the relay and the agent
(docs/design/relay.md "Envelopes and env tags").

    tag_key = HKDF-SHA256(ikm = content key generation 1, salt = space id (16 bytes),
                          info = "mocksync/relay-env-tag/v1")
    tag     = hex(HMAC-SHA256(tag_key, env uuid as UTF-8)[:16])          (32 hex characters)

Generation 1 on purpose: a tag must not change when the key rotates. Pure: keys in, tags out.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyMaterialError
from .keys import KEY_BYTES

#: Bytes of HMAC output kept in a tag (shown as twice as many hex characters).
TAG_BYTES = 16
#: HKDF info of the tag key (domain separation from every other use of the content key).
TAG_INFO = b"mocksync/relay-env-tag/v1"
#: The content key generation env tags are derived from (see the module docstring).
TAG_KEY_GENERATION = 1


def tag_key(space_id: str, keys_by_gen: Mapping[int, bytes]) -> bytes:
    """The space's env-tag key, derived from content key generation 1."""
    key = keys_by_gen.get(TAG_KEY_GENERATION)
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise KeyMaterialError(
            f"this device lacks content key generation {TAG_KEY_GENERATION} of space "
            f"{space_id[:12]}, needed to name environments to the relay; re-join the space"
        )
    return HKDF(hashes.SHA256(), 32, bytes.fromhex(space_id), TAG_INFO).derive(key)


def env_tag(key: bytes, env: str) -> str:
    """The tag of environment `env` under a space's tag key."""
    return hmac.new(key, env.encode("utf-8"), sha256).digest()[:TAG_BYTES].hex()


class Tagger:
    """Env tags of one space, memoised (an env's tag is computed once per process)."""

    def __init__(self, space_id: str, keys_by_gen: Mapping[int, bytes]) -> None:
        self.space_id = space_id
        self._key = tag_key(space_id, keys_by_gen)
        self._cache: dict[str, str] = {}

    def __call__(self, env: str) -> str:
        tag = self._cache.get(env)
        if tag is None:
            tag = self._cache[env] = env_tag(self._key, env)
        return tag
