//! ship
