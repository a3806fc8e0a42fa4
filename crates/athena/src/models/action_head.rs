//! MemoryActionHead.
