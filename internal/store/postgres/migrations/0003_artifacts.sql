-- Code bundles shared by every Berth replica on this database (the Shared
-- backend of internal/artifact). It depends on no other migration.
--
-- A blob's bytes are cut into chunks of 1 MiB, so that no statement carries
-- a whole bundle of up to 250 MiB; a blob's row and its chunks are written
-- in one transaction, so a blob is seen whole or not at all. The chunks are
-- zip data, which does not compress: EXTERNAL storage keeps PostgreSQL from
-- trying.

CREATE TABLE artifact_blobs (
	digest     text COLLATE "C" NOT NULL PRIMARY KEY, -- sha256:<hex>
	size       bigint      NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE artifact_chunks (
	digest text COLLATE "C" NOT NULL REFERENCES artifact_blobs (digest) ON DELETE CASCADE,
	n      integer NOT NULL, -- from 0
	data   bytea   NOT NULL,
	PRIMARY KEY (digest, n)
);
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- One row per bucket and key: a JSON document that only Berth reads. doc is
-- NULL only inside the transaction that creates the row.
CREATE TABLE artifact_refs (
	bucket text COLLATE "C" NOT NULL,
	key    text COLLATE "C" NOT NULL,
	doc    bytea,
	PRIMARY KEY (bucket, key)
);
