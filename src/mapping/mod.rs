//! Mapping files: from directory entries to Ironclad users and groups. To be built.
