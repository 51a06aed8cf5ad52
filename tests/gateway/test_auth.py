"""Keys are stored hashed; a presented key resolves to its tier, anything else to nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lab.gateway.auth import KeyStore, bearer_token, check_hash_format, hash_key, verify_key
from lab.gateway.config import KeyConfig

ROOT = Path(__file__).resolve().parents[2]


def test_sha256_hash_is_the_hex_digest_and_verifies():
    # Hand-checked: sha256("abc") is the FIPS 180-2 test vector.
    assert hash_key("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify_key("abc", hash_key("abc")) and not verify_key("abd", hash_key("abc"))


def test_pbkdf2_is_salted_and_verifies():
    first, second = hash_key("pw", "pbkdf2", iterations=1000), hash_key("pw", "pbkdf2", iterations=1000)
    assert first != second  # a fresh salt each time
    assert verify_key("pw", first) and verify_key("pw", second) and not verify_key("pv", first)
    assert check_hash_format(first) and check_hash_format(hash_key("x")) and not check_hash_format("plain")


def test_keystore_maps_keys_to_tiers_and_rejects_others():
    store = KeyStore((KeyConfig("a", hash_key("key-a"), "vip"),
                      KeyConfig("b", hash_key("key-b", "pbkdf2", iterations=1000), "batch")))
    assert store.lookup("key-a").tier == "vip"
    assert store.lookup("key-b").tier == "batch" and store.lookup("key-b").tier == "batch"  # second: cached
    assert store.lookup("key-c") is None and store.lookup("") is None and store.lookup(None) is None
    assert store.lookup(hash_key("key-a")) is None  # the stored hash is not a key


def test_an_anonymous_tier_serves_requests_without_a_key_but_never_a_wrong_key():
    store = KeyStore((KeyConfig("a", hash_key("key-a"), "vip"),), anonymous_tier="batch")
    assert store.lookup(None).tier == "batch" and store.lookup("").tier == "batch"
    assert store.lookup(None).name == "anonymous"  # one set of key buckets for every keyless request
    assert store.lookup("key-a").tier == "vip" and store.lookup("key-typo") is None


def test_bearer_token_parsing():
    assert bearer_token({"authorization": "Bearer sk-1"}) == "sk-1"
    assert bearer_token({"authorization": "Basic sk-1"}) is None
    assert bearer_token({"api-key": "sk-2"}) == "sk-2"
    assert bearer_token({}) is None


def test_hash_key_command_prints_a_verifiable_hash():
    result = subprocess.run([sys.executable, "-m", "lab", "gateway", "hash-key"], input="sk-from-stdin\n",
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert verify_key("sk-from-stdin", result.stdout.strip())
