package connbudget

import (
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v4"
)

func TestIdentityIsCheckedBeforeConnecting(t *testing.T) {
	for _, opts := range []Options{
		{},
		{ApplicationName: strings.Repeat("a", 64)},
		{ApplicationName: "caf\u00e9"},
		{ApplicationName: "api", Pod: strings.Repeat("p", 64)},
		{ApplicationName: "api", Pod: "pod\n1"},
		{ApplicationName: "api", Pod: "p\u00f6d"},
		{ApplicationName: "api", Pod: "p\x7f"},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("New(%+v) accepted it", opts)
		}
	}
	b, err := New(Options{ApplicationName: "api", Pod: strings.Repeat("p", 63)})
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); len(s.PoolSession) != 16 || s.Status != "starting" || s.Limit != 1 {
		t.Errorf("new budget: %+v", s)
	}
	other, _ := New(Options{ApplicationName: "api", Pod: "p"})
	if other.Stats().PoolSession == b.Stats().PoolSession {
		t.Error("two Budgets share a pool session")
	}
}

// Without a pod id, the pod is the host name (in Kubernetes, the pod's
// name).
func TestPodDefaultsToTheHostName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	b, err := New(Options{ApplicationName: "api"})
	if err != nil || b.opts.Pod != host || b.Stats().Pod != host {
		t.Fatalf("pod %q (%v), want the host name %q", b.opts.Pod, err, host)
	}
}

// DSN gives the identity in the form the drivers read: the test reads it
// back with pgx's own parser.
func TestDSN(t *testing.T) {
	b, err := New(Options{ApplicationName: "api", Pod: `web 7\x'9`})
	if err != nil {
		t.Fatal(err)
	}
	wantOptions := `-c connbudget.pod=web\ 7\\x'9 -c connbudget.pool_session=` + b.st.PoolSession
	if got := b.StartupOptions(); got != wantOptions {
		t.Fatalf("StartupOptions() = %q, want %q", got, wantOptions)
	}
	for dsn, userOptions := range map[string]string{
		"host=db port=5433 user=u dbname=d":                                     "",
		`host=db user = 'u s' password='it\'s' application_name=old dbname=d`:   "",
		"host=db options='-c statement_timeout=5s' application_name=x":          "-c statement_timeout=5s ",
		`host=db password=a\ b`:                                                 "",
		"postgres://u:p@db:5433/d?sslmode=disable":                              "",
		"postgresql://u@db/d?application_name=old&options=-c%20work_mem%3D64MB": "-c work_mem=64MB ",
	} {
		out, err := b.DSN(dsn)
		if err != nil {
			t.Errorf("DSN(%q): %v", dsn, err)
			continue
		}
		cfg, err := pgx.ParseConfig(out)
		if err != nil {
			t.Errorf("DSN(%q) = %q, which does not parse: %v", dsn, out, err)
			continue
		}
		if cfg.RuntimeParams["application_name"] != "api" || cfg.RuntimeParams["options"] != userOptions+wantOptions {
			t.Errorf("DSN(%q) = %q: application_name %q, options %q", dsn, out,
				cfg.RuntimeParams["application_name"], cfg.RuntimeParams["options"])
		}
		if cfg.Host != "db" {
			t.Errorf("DSN(%q) = %q: host %q", dsn, out, cfg.Host)
		}
	}
	if out, _ := b.DSN(`host=db password='a\'b c'`); !strings.Contains(out, `password='a\'b c'`) {
		t.Errorf("a quoted password: %q", out)
	}
	for _, dsn := range []string{
		"host=db options='-c connbudget.pod=x'",
		"host",
		"host=db password='unterminated",
		"postgres://u@db/d?options=-c%20connbudget.pool_session%3Dx",
		"postgres://u@[bad/d",
	} {
		if out, err := b.DSN(dsn); err == nil {
			t.Errorf("DSN(%q) = %q: no error", dsn, out)
		}
	}
}
