-- Initial schema. Keys are text in the "C" collation, so that they sort and
-- compare bytewise whatever the database's default collation is: page
-- cursors (WHERE id > $1 ORDER BY id) then mean the same as in SQLite.
-- Timestamps are timestamptz, which keeps microseconds. Document columns
-- take NULL for an empty document, as in SQLite.

CREATE TABLE runtimes (
	id             text COLLATE "C" NOT NULL PRIMARY KEY,
	name           text COLLATE "C" NOT NULL UNIQUE,
	latest_version bigint      NOT NULL,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	deleting       boolean     NOT NULL
);

CREATE TABLE versions (
	runtime_id     text COLLATE "C" NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
	number         bigint      NOT NULL,
	status         text        NOT NULL,
	failure_reason text        NOT NULL,
	artifact       text COLLATE "C" NOT NULL,
	config         bytea,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	PRIMARY KEY (runtime_id, number)
);

-- Garbage collection of artifacts looks versions up by artifact.
CREATE INDEX versions_artifact ON versions (artifact);

CREATE TABLE endpoints (
	runtime_id     text COLLATE "C" NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
	name           text COLLATE "C" NOT NULL,
	id             text        NOT NULL,
	description    text        NOT NULL,
	live_version   bigint      NOT NULL,
	target_version bigint      NOT NULL,
	status         text        NOT NULL,
	failure_reason text        NOT NULL,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	PRIMARY KEY (runtime_id, name)
);

CREATE TABLE idempotency (
	key          text COLLATE "C" NOT NULL PRIMARY KEY,
	request_hash text        NOT NULL,
	result       bytea,
	created_at   timestamptz NOT NULL
);

-- Expiry deletes records by age.
CREATE INDEX idempotency_created_at ON idempotency (created_at);
