//! fsck: check (and repair) a novafs image. Work in progress.
