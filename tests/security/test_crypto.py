"""Encryption with rotating keys: what is encrypted reads back only under a configured key, rotation moves it to the
newest key, and every failure names the problem without showing a value or a key."""
import pytest
from cryptography.fernet import Fernet

from agents.core.crypto import decrypt, encrypt, key_generate, rotate
from agents.exceptions import SecretError


def test_text_encrypted_reads_back_and_the_token_does_not_show_it(encryption_key):
    token = encrypt("pa55word with ünïcode")

    assert decrypt(token) == "pa55word with ünïcode"
    assert "pa55word" not in token
    assert encrypt("pa55word with ünïcode") != token  # a fresh IV each time: equal values do not look equal


def test_a_token_from_a_key_no_longer_configured_is_refused_with_the_reason(settings):
    settings.AGENTS_ENCRYPTION_KEYS = [key_generate()]
    token = encrypt("s3cret")
    settings.AGENTS_ENCRYPTION_KEYS = [key_generate()]

    with pytest.raises(SecretError) as raised:
        decrypt(token)

    assert "no key in AGENTS_ENCRYPTION_KEYS decrypts it" in str(raised.value)
    assert "s3cret" not in str(raised.value) and token not in str(raised.value)


def test_rotation_moves_a_value_to_the_newest_key_so_the_old_one_can_be_dropped(settings):
    old, new = key_generate(), key_generate()
    settings.AGENTS_ENCRYPTION_KEYS = [old]
    token = encrypt("s3cret")

    # given a new key listed first, the old one still listed: old tokens still read
    settings.AGENTS_ENCRYPTION_KEYS = [new, old]
    assert decrypt(token) == "s3cret"
    rotated = rotate(token)

    # when the old key is dropped, the rotated token reads and the old one does not
    settings.AGENTS_ENCRYPTION_KEYS = [new]
    assert decrypt(rotated) == "s3cret"
    assert Fernet(new).decrypt(rotated.encode()) == b"s3cret"
    with pytest.raises(SecretError, match="cannot decrypt"):
        decrypt(token)


@pytest.mark.parametrize(("keys", "problem"), [
    (["not-a-key"], "AGENTS_ENCRYPTION_KEYS item 1 of 1 is not a Fernet key"),
    ([Fernet.generate_key().decode(), "short"], "AGENTS_ENCRYPTION_KEYS item 2 of 2 is not a Fernet key"),
    ([], "AGENTS_ENCRYPTION_KEYS is empty"),
])
def test_a_bad_key_is_named_by_its_place_never_shown(settings, keys, problem):
    settings.AGENTS_ENCRYPTION_KEYS = keys

    with pytest.raises(SecretError) as raised:
        encrypt("x")

    assert problem in str(raised.value)
    assert "short" not in str(raised.value) and "not-a-key" not in str(raised.value)
