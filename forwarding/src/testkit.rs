//! Test support (feature `testkit`): a fluent packet builder and a full checksum verifier.
