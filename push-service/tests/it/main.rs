//! Integration tests: the real server on port 0, on SQLite and on PostgreSQL + Redis.

mod fixtures;
mod helpers;

mod apps;
mod credentials;
mod notifiers;
mod ops;
mod process;
