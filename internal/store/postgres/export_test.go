package postgres

import "github.com/berthrun/berth/internal/store/postgres/pgtest"

// Server is the internal tests' PostgreSQL server, for the external
// ones.
func Server() *pgtest.Server { return testPG }
