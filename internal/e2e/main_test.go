package e2e

import (
	"os"
	"testing"

	"github.com/berthrun/berth/internal/store/postgres/pgtest"
)

// pg is the PostgreSQL server of the tests that keep Berth's state there,
// started by the first of them.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &pg))
}
