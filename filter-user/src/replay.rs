//! `namewall replay`: a capture through the loaded program, packet by packet.
