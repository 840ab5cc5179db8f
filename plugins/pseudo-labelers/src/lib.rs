//! Built-in clisc pseudo-labelers.
