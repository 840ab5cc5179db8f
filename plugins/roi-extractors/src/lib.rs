//! Built-in clisc roi-extractors.
