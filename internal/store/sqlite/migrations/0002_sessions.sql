-- The registry of live sessions (store.Sessions) and the heartbeats of the
-- replicas that own them. Times are text in the layout of 0001, so lease and
-- use times compare exactly, to the nanosecond, as strings. Session records
-- have no foreign key to runtimes: the registry is written outside the
-- control plane's transactions, and DeleteRuntime removes a runtime's
-- records itself.

CREATE TABLE sessions (
	runtime_id  TEXT    NOT NULL,
	session_id  TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	sandbox_id  TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	lease_until TEXT    NOT NULL,
	created_at  TEXT    NOT NULL,
	last_used   TEXT    NOT NULL,
	PRIMARY KEY (runtime_id, session_id)
) STRICT;

-- Heartbeat finds a replica's sessions by owner, TakeOver the expired
-- leases by lease_until.
CREATE INDEX sessions_owner ON sessions (owner);
CREATE INDEX sessions_lease_until ON sessions (lease_until);

CREATE TABLE replicas (
	id         TEXT NOT NULL PRIMARY KEY,
	live_until TEXT NOT NULL
) STRICT;
