//! The Ironclad CLM client: OAuth tokens, SCIM requests, paging, retries and per-bucket pacing.
//! It translates between HTTP and the project's types; it never decides what should happen.
