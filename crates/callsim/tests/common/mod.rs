//! Helpers shared by callsim's integration tests.
#![allow(dead_code)]

pub mod spec;
