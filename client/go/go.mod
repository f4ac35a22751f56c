module github.com/connbudget/connbudget/client/go

go 1.19

// The package itself needs nothing beyond the standard library; its tests
// run against a real server through both drivers it is made for.
require (
	github.com/jackc/pgconn v1.11.0
	github.com/jackc/pgx/v4 v4.15.0
	github.com/lib/pq v1.10.7
)
