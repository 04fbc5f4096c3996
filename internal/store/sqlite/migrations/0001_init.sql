-- Initial schema. Timestamps are UTC text in a fixed-width layout
-- (2006-01-02T15:04:05.000000000Z), so they compare correctly as strings and
-- keep nanoseconds. Tables are STRICT so a wrong type is an error, not a
-- silent conversion. Blob columns take NULL for an empty document, since the
-- driver binds an empty Go slice as NULL.

CREATE TABLE runtimes (
	id             TEXT    NOT NULL PRIMARY KEY,
	name           TEXT    NOT NULL UNIQUE,
	latest_version INTEGER NOT NULL,
	created_at     TEXT    NOT NULL,
	updated_at     TEXT    NOT NULL,
	deleting       INTEGER NOT NULL CHECK (deleting IN (0, 1))
) STRICT;

CREATE TABLE versions (
	runtime_id     TEXT    NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
	number         INTEGER NOT NULL,
	status         TEXT    NOT NULL,
	failure_reason TEXT    NOT NULL,
	artifact       TEXT    NOT NULL,
	config         BLOB,
	created_at     TEXT    NOT NULL,
	updated_at     TEXT    NOT NULL,
	PRIMARY KEY (runtime_id, number)
) STRICT;

-- Garbage collection of artifacts looks versions up by artifact.
CREATE INDEX versions_artifact ON versions (artifact);

CREATE TABLE endpoints (
	runtime_id     TEXT    NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
	name           TEXT    NOT NULL,
	id             TEXT    NOT NULL,
	description    TEXT    NOT NULL,
	live_version   INTEGER NOT NULL,
	target_version INTEGER NOT NULL,
	status         TEXT    NOT NULL,
	failure_reason TEXT    NOT NULL,
	created_at     TEXT    NOT NULL,
	updated_at     TEXT    NOT NULL,
	PRIMARY KEY (runtime_id, name)
) STRICT;

CREATE TABLE idempotency (
	key          TEXT NOT NULL PRIMARY KEY,
	request_hash TEXT NOT NULL,
	result       BLOB,
	created_at   TEXT NOT NULL
) STRICT;

-- Expiry deletes records by age.
CREATE INDEX idempotency_created_at ON idempotency (created_at);
