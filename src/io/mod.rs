//! Readers and writers for the files the CLI consumes and produces, with validation.

pub mod npy;
