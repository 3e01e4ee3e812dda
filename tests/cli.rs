//! Integration tests: the real `tdelta` binary in temporary directories.
