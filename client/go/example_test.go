package connbudget_test

import (
	"database/sql"
	"database/sql/driver"
	"expvar"
	"log"
	"os"

	connbudget "github.com/connbudget/connbudget/client/go"
	"github.com/jackc/pgx/v4/stdlib"
	"github.com/lib/pq"
)

// A pool on lib/pq that follows its share.
func Example() {
	budget, err := connbudget.New(connbudget.Options{ApplicationName: "api"})
	if err != nil {
		log.Fatal(err)
	}
	dsn, err := budget.DSN(os.Getenv("DATABASE_URL")) // adds application_name, pod and pool session
	if err != nil {
		log.Fatal(err)
	}
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(budget.Connector(connector)) // connects refused with 53300 wait
	db.SetMaxOpenConns(20)                        // the pool's own maximum
	if err := budget.Follow(db); err != nil {
		log.Fatal(err)
	}
	defer budget.Close() // hands the share back, then closes db
	expvar.Publish("connbudget", expvar.Func(func() any { return budget.Stats() }))
}

// A pool on pgx's database/sql driver; the pod's id from the environment
// (in Kubernetes, the downward API's metadata.name).
func Example_pgx() {
	budget, err := connbudget.New(connbudget.Options{ApplicationName: "api", Pod: os.Getenv("POD_NAME")})
	if err != nil {
		log.Fatal(err)
	}
	dsn, err := budget.DSN("postgres://api@db/app?sslmode=require")
	if err != nil {
		log.Fatal(err)
	}
	// pgx v4.16 and later: stdlib.GetConnector(*config), with
	// config.RuntimeParams["options"] = budget.StartupOptions()
	connector, err := stdlib.GetDefaultDriver().(driver.DriverContext).OpenConnector(dsn)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(budget.Connector(connector))
	db.SetMaxOpenConns(20)
	if err := budget.Follow(db); err != nil {
		log.Fatal(err)
	}
	defer budget.Close()
}
