//! Integration tests of push-core: real servers on 127.0.0.1 port 0, a real receiver, a real
//! SQLite file in a temporary directory. One test binary: each file here is a module of it,
//! so the suite links once.

mod breaker;
mod config_env;
mod connections;
mod delivery;
mod fanout;
mod filters;
mod hardening;
mod ingest;
mod intake;
mod ops;
mod ordering;
mod orphans;
mod readiness;
mod replicas;
mod retention;
mod security;
mod single_process;
mod sources_ami;
mod sources_asterisk;
mod sources_esl;
mod sources_freeswitch;
mod sources_redis;
mod sources_ucm;
mod store_contract;
mod subscriber_admin;
// issue 14: stale statuses (status.supersede).
mod supersede;
