//! Library target so filter-user can name this crate as a build dependency
//! (cargo then rebuilds it when the program's sources change); the program
//! itself is the `namewall` binary, built for `bpfel-unknown-none`.
#![no_std]
