"""htpasswd/htdigest parsing and password hash verification, fed literal values."""

from __future__ import annotations

import base64
import hashlib
import subprocess

import bcrypt
import pytest

from middleware.http.htpasswd import (
    Scheme,
    md5_crypt,
    parse_hash,
    parse_htdigest,
    parse_htpasswd,
    user_entries,
)


def openssl_passwd(flag: str, salt: str, password: str) -> str:
    """The reference MD5-crypt hash, from OpenSSL."""
    out = subprocess.run(
        ["openssl", "passwd", flag, "-salt", salt, password],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


MD5_CASES = {
    "empty-password": ("abc", ""),
    "short": ("saltsalt", "password"),
    "one-char-salt": ("x", "p"),
    "over-16-bytes": ("r4nd0m", "a password longer than sixteen bytes"),
    "utf8": ("s", "pässwörd"),
}


@pytest.mark.parametrize("flag", ["-apr1", "-1"], ids=["apr1", "md5crypt-1"])
@pytest.mark.parametrize(("salt", "password"), MD5_CASES.values(), ids=MD5_CASES.keys())
async def test_md5_crypt_matches_openssl(flag, salt, password):
    """MD5-crypt gives OpenSSL's hash for both the $apr1$ and the $1$ magic."""
    reference = openssl_passwd(flag, salt, password)
    magic = b"$apr1$" if flag == "-apr1" else b"$1$"
    assert md5_crypt(password.encode(), salt.encode(), magic).decode() == reference
    assert parse_hash(reference).verify(password.encode())
    assert not parse_hash(reference).verify(password.encode() + b"x")


async def test_traefik_documentation_apr1_example_verifies():
    """The apr1 hash in Traefik's basicAuth documentation verifies its password."""
    stored = parse_hash("$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/")
    assert stored.scheme is Scheme.MD5_CRYPT
    assert stored.verify(b"test")
    assert not stored.verify(b"Test")


BCRYPT_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


@pytest.mark.parametrize("prefix", ["$2b$", "$2y$", "$2a$", "$2x$"])
async def test_bcrypt_prefixes_verify(prefix):
    """Every bcrypt prefix go-http-auth accepts verifies the right password only."""
    stored = parse_hash(prefix + BCRYPT_HASH[4:])
    assert stored.scheme is Scheme.BCRYPT and stored.slow
    assert stored.verify(b"s3cret")
    assert not stored.verify(b"s3cret!")


async def test_bcrypt_compares_the_first_72_bytes_like_apache():
    """A password over 72 bytes is compared by its first 72, not refused."""
    long = b"x" * 72
    stored = parse_hash(bcrypt.hashpw(long, bcrypt.gensalt(4)).decode())
    assert stored.verify(long + b"ignored")
    assert not stored.verify(long[:-1])


async def test_sha1_verifies():
    """{SHA} hashes verify the right password only, and are not slow."""
    text = "{SHA}" + base64.b64encode(hashlib.sha1(b"hunter2").digest()).decode()
    stored = parse_hash(text)
    assert stored.scheme is Scheme.SHA1 and not stored.slow
    assert stored.verify(b"hunter2")
    assert not stored.verify(b"hunter3")


BAD_HASHES = {
    "sha512-crypt": ("$6$salt$" + "a" * 86, "SHA-512-crypt ($6$) is not supported"),
    "sha256-crypt": ("$5$salt$" + "a" * 43, "SHA-256-crypt ($5$) is not supported"),
    "argon2": ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "argon2 is not supported"),
    "yescrypt": ("$y$j9T$salt$hash", "yescrypt ($y$) is not supported"),
    "ssha": ("{SSHA}abcdefgh", "salted SHA-1 ({SSHA}) is not supported"),
    "des-crypt": ("abJnggxhB/yWI", "traditional DES crypt is not supported"),
    "plain-text": ("password", "plain-text passwords are not accepted"),
    "short-bcrypt": ("$2y$05$tooShort", "malformed bcrypt hash"),
    "bcrypt-cost": ("$2y$99$" + "a" * 53, "bcrypt cost 99 is outside 4..31"),
    "short-apr1": ("$apr1$salt$abc", "malformed MD5-crypt hash"),
    "sha-length": ("{SHA}" + base64.b64encode(b"short").decode(), "expected base64 of 20 bytes"),
}


@pytest.mark.parametrize(("text", "message"), BAD_HASHES.values(), ids=BAD_HASHES.keys())
async def test_unverifiable_hashes_are_refused_with_the_reason(text, message):
    """A hash this module cannot verify is a ValueError saying which format it is."""
    with pytest.raises(ValueError) as caught:
        parse_hash(text)
    assert message in str(caught.value)


async def test_unsupported_message_lists_the_supported_formats():
    """The refusal of a known-but-unsupported format names the formats that work."""
    with pytest.raises(ValueError, match=r"use bcrypt .*apr1.*\{SHA\}"):
        parse_hash("$6$salt$" + "a" * 86)


async def test_file_lines_win_and_comments_are_skipped():
    """users then usersFile are merged, the file's entry winning; blanks and # lines skipped."""
    apr1 = "$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/"
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"file").digest()).decode()
    text = f"# comment\n\n  alice:{sha}  \nbob:{apr1}\n"
    users = parse_htpasswd(user_entries([f"alice:{apr1}", f"carol:{apr1}"], "/u", text))
    assert sorted(users) == ["alice", "bob", "carol"]
    assert users["alice"].verify(b"file")
    assert not users["alice"].verify(b"test")


BAD_LINES = {
    "no-colon": ("ok:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n\n# c\njustaname\n", "line 4"),
    "two-colons": ("a:b:c\n", "line 1"),
    "empty-user": (":$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/\n", "line 1"),
    "bad-hash": ("\nbob:plaintext\n", "line 2: user 'bob': not a recognised hash"),
}


@pytest.mark.parametrize(("text", "where"), BAD_LINES.values(), ids=BAD_LINES.keys())
async def test_malformed_file_line_names_its_number(text, where):
    """A malformed usersFile line is an error naming the file and the line number."""
    with pytest.raises(ValueError) as caught:
        parse_htpasswd(user_entries([], "/etc/users", text))
    assert f"usersFile /etc/users {where}" in str(caught.value)


async def test_malformed_users_entry_names_its_index_without_the_secret():
    """A bad users entry is named by index, and the message does not echo the hash."""
    with pytest.raises(ValueError) as caught:
        parse_htpasswd(user_entries(["a:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "b:x:secret"]))
    assert str(caught.value) == "users[1]: expected user:hash, got 'b:...'"


async def test_htdigest_lines_parse_by_user_and_realm():
    """htdigest entries map (user, realm) to lower-cased HA1; the file wins."""
    ha1 = hashlib.md5(b"test:traefik:test").hexdigest()
    users = parse_htdigest(
        user_entries(
            ["test:traefik:" + "0" * 32, "test:other:" + ha1.upper()],
            "/d",
            f"test:traefik:{ha1}\n",
        )
    )
    assert users == {("test", "traefik"): ha1, ("test", "other"): ha1}


HTDIGEST_BAD = {
    "two-fields": ("test:a2688e031edb4be6a3797f3882655c05", "expected user:realm:HA1"),
    "short-ha1": ("test:traefik:abc", "HA1 must be 32 hex digits"),
    "not-hex": ("test:traefik:" + "z" * 32, "HA1 must be 32 hex digits"),
}


@pytest.mark.parametrize(("line", "message"), HTDIGEST_BAD.values(), ids=HTDIGEST_BAD.keys())
async def test_malformed_htdigest_line_names_its_number(line, message):
    """A malformed htdigest line is an error naming the line and the problem."""
    with pytest.raises(ValueError) as caught:
        parse_htdigest(user_entries([], "/d", f"# users\n{line}\n"))
    assert "usersFile /d line 2" in str(caught.value)
    assert message in str(caught.value)
