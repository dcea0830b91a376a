"""Membership entries and invite tokens stay byte-for-byte what they were before the wire codec.

Entries are signed and hash-chained and tokens carry a checksum, so their bytes can never
change under a given format version. The hex and token text below were captured with the
hand-written readers `space.fields` had before entries and tokens were checked through the
wire schema's checkers (issue 14): building the same entries today must give the same bytes,
and the captured bytes must still be read to the same fields.
"""

from __future__ import annotations

from mocksync.space import membership as M
from mocksync.space.identity import Identity
from mocksync.space.invite import InviteToken


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32,
                               member_name=f"person{n}")

A, B = ident(1), ident(2)
SPACE = bytes(range(16))
RA, RB = "https://relay.example:8765", "http://127.0.0.1:9000"

def build() -> list[M.Entry]:
    g = M.new_genesis(A, name="backend é", member_name="Alice", now_ms=1000, relay=[RA, RB],
                      member_id="0123456789abcdef", space_id=SPACE, device_limit=3)
    out = [g]
    bob = "fedcba9876543210"
    steps = [
        lambda st: M.add_member(A, st, member_id=bob, name="Bob", role="editor", now_ms=2000),
        lambda st: M.add_device(A, st, member_id=bob, device=B.public,
                                sealed_key=(1, b"sealed-key"), now_ms=3000),
        lambda st: M.set_role(A, st, member_id=bob, role="admin", now_ms=4000),
        lambda st: M.remove_device(A, st, device_id=B.device_id,
                                   covers={"env-1": 4, "env-2": 0}, now_ms=5000),
        lambda st: M.migrate(A, st, model=2, now_ms=6000),
    ]
    for step in steps:
        out.append(step(M.verify_log(out)))
    return out


def tokens() -> list[InviteToken]:
    return [InviteToken(SPACE, "backend é", RA, A.device_id, b"s" * 16, 1_900_000_000, "editor",
                        None, (RB,)),
            InviteToken(SPACE, "backend", None, A.device_id, b"t" * 16, 1_900_000_001, "admin",
                        "0123456789abcdef")]


#: Wire bytes (hex) of build(), in order: genesis, add_member, add_device, set_role,
#: remove_device, migrate (entry format 1: names as text, so the bytes are deterministic).
ENTRIES = [
    "a263736967584014d04317db834bbaded4fce788d6e724878e71da506d76148f0eaa22b830917abdf630eaea3d3d16633bb8097eb62c2a36999af17408ce0143a129834abced0464626f6479590176a86176016464617461a7646e616d656a6261636b656e6420c3a9656d6f64656c016572656c617982781a68747470733a2f2f72656c61792e6578616d706c653a3837363575687474703a2f2f3132372e302e302e313a3930303066646576696365a46269647747533859412d57354830322d37304358422d4b5645313663626f785820fb41b1fcf75c1227fa08876056a5ed07ac44fe0c116ec2de80b8e523959d7824646e616d656464657631647369676e58208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c666d656d626572a26269647030313233343536373839616263646566646e616d6565416c6963656a73706163655f6b696e64647465616d6c6465766963655f6c696d697403646b696e646767656e657369736474696d651903e865737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720067706172656e747380",
    "a26373696758401f66d68163c1f85b5d0dcc3424e38a5cf14cee4b0777cec8e86e8daa2f098aec17c2df4c347203554e31026196cc1a8092ff48a3efb7941186560671b6f1600664626f647958bda86176016464617461a264726f6c6566656469746f72666d656d626572a26269647066656463626139383736353433323130646e616d6563426f62646b696e646a6164645f6d656d6265726474696d651907d065737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720167706172656e7473815820c0abecd0e4d72d710d30c15a22d6b36bcdfda5803d1c7c2cec5478dde05e135a",
    "a26373696758406381a02335b15df796047905663c2491c36b5602c3b4a7b271e1dffbf2455e68264dc81bc3861bb866408cf1add58d908eaad51fa586ea2b94905c88315bfb0f64626f647959013aa86176016464617461a3636b6579a26367656e01667365616c65644a7365616c65642d6b657966646576696365a462696477534e4653542d54395a35322d56585331582d424b38345163626f785820219e4d800da968d2a5fcb009c784f4746c7138edb9ee4844b739e830b05cf424646e616d656464657632647369676e58208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394666d656d6265727066656463626139383736353433323130646b696e646a6164645f6465766963656474696d65190bb865737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720267706172656e74738158208e6c569442fa891b3de7234a4efa83b746f97de172cb85e37ccd4406495f6b03",
    "a26373696758408450aee6b1328d9e64c4cbfe871402c765b8fda230dbaac79f2ed6636708a3b5e064232716a04029aa5a82316c8f03a02748260479bcd7b6b22275f0e49c0a0a64626f647958ada86176016464617461a264726f6c656561646d696e666d656d6265727066656463626139383736353433323130646b696e64687365745f726f6c656474696d65190fa065737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720367706172656e74738158204151eca3fdd482c31fe3843673eb17542e8d1169c42c4bb1b30b9ef0e580249f",
    "a2637369675840cc3ac40cb52e019de73984a5bc9cfdf960487f8b1c065c39564a377501fcbe0af3f68d4d067c92c537e46bf7276ef57be2b34e44a50e1faa6f28850e15f4320464626f647958c4a86176016464617461a266636f76657273a265656e762d310465656e762d32006664657669636577534e4653542d54395a35322d56585331582d424b383451646b696e646d72656d6f76655f6465766963656474696d6519138865737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720467706172656e7473815820ae07de7cb2e57ae6e0f084b44827d451b7a59e850b785a791a8e14db7f91cdaa",
    "a263736967584025be838053ff6d513cc719a9115bb614144e99033c12ff358ad61c82a42c1140b2e6fe254d8b8c19144544cc32b76047c5abe5963fde63c5bc74322627ec600564626f64795890a86176016464617461a1656d6f64656c02646b696e64676d6967726174656474696d6519177065737061636550000102030405060708090a0b0c0d0e0f66617574686f727747533859412d57354830322d37304358422d4b5645313667636f756e7465720567706172656e74738158205ae0405d136979d9a7e2621ef7e7a454c67e65dc76baff51a918c19a982694dc",
]
#: Text of tokens(), in order.
TOKENS = [
    "mocksync1-vfqxmalenzqw2zlkmjqwg23fnzscbq5jmrzg63dfmzswi2lun5zgk4tfnrqxtatydjuhi5dqom5c6l3smvwgc6jomv4gc3lqnrstuobxgy2xk2duorydulzpgezdolrqfyyc4mj2heydamdfonygcy3fkaaacaqdaqcqmbyibefawdanbyhwm3lfnvrgk4xwmzzwky3smv2fa43tonzxg43tonzxg43tonzxg43hmv4ha2lsmvzru4j7wmago2loozuxizlso5dvgocziewvonkigazc2nzqinmeelklkzctcnwqzzssi",
    "mocksync1-vfqxmalenzqw2zlhmjqwg23fnzsgi4tpnrswkylenvuw4zlsmvwgc6pwmvzxayldmviaaaicamcakbqhbaequcymbuha6ztnmvwwezlsoaydcmrtgq2tmnzyhfqwey3emvtgm43fmnzgk5cqor2hi5duor2hi5duor2hi5duortwk6dqnfzgk4y2oe73galhnfxhm2lumvzhor2thbmuclkxgvedamrng4yegwccfvfvmrjrg3miws7p",
]


def test_entries_are_signed_to_the_same_bytes() -> None:
    assert [e.wire.hex() for e in build()] == ENTRIES


def test_captured_entries_read_to_the_same_fields_and_log() -> None:
    built = build()
    read = [M.Entry.from_wire(bytes.fromhex(h)) for h in ENTRIES]
    for new, old in zip(built, read, strict=True):
        assert (old.kind, old.author, old.parents, old.counter, old.time_ms, old.data,
                old.body_bytes, old.sig) == (new.kind, new.author, new.parents, new.counter,
                                             new.time_ms, new.data, new.body_bytes, new.sig)
    state = M.verify_log(read)
    assert state.relays == (RA, RB)
    assert state.model == 2


def test_tokens_encode_and_parse_to_the_same_text() -> None:
    for token, text in zip(tokens(), TOKENS, strict=True):
        assert token.encode() == text
        assert InviteToken.parse(text) == token
