//! Configuration (to be written)
