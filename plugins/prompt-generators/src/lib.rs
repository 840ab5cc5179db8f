//! Built-in clisc prompt-generators.
