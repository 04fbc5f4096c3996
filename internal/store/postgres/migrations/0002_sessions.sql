-- The registry of live sessions (store.Sessions) and the heartbeats of the
-- replicas that own them. Keys are in the "C" collation and times are
-- timestamptz (microseconds), as in 0001. Session records have no foreign
-- key to runtimes: the registry is written outside the control plane's
-- transactions, and DeleteRuntime removes a runtime's records itself.
--
-- A touch changes only last_used, which no index holds, so PostgreSQL can
-- update the row in place on its page (a HOT update) when the page has room:
-- the fill factor leaves that room.

CREATE TABLE sessions (
	runtime_id  text COLLATE "C" NOT NULL,
	session_id  text COLLATE "C" NOT NULL,
	version     bigint      NOT NULL,
	sandbox_id  text        NOT NULL,
	owner       text COLLATE "C" NOT NULL,
	lease_until timestamptz NOT NULL,
	created_at  timestamptz NOT NULL,
	last_used   timestamptz NOT NULL,
	PRIMARY KEY (runtime_id, session_id)
) WITH (fillfactor = 80);

-- Heartbeat finds a replica's sessions by owner, TakeOver the expired
-- leases by lease_until.
CREATE INDEX sessions_owner ON sessions (owner);
CREATE INDEX sessions_lease_until ON sessions (lease_until);

CREATE TABLE replicas (
	id         text COLLATE "C" NOT NULL PRIMARY KEY,
	live_until timestamptz NOT NULL
);
