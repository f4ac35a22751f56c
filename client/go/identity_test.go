package connbudget

import (
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
		{ApplicationName: "api", Pod: "p", MinSize: 5, MaxSize: 4},
		{ApplicationName: "api", Pod: "p", MaxSize: -1},
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
	if other.session == b.session {
		t.Error("two Budgets share a pool session")
	}
}

func TestPodDefaults(t *testing.T) {
	t.Setenv("CB_TEST_POD", "web-7f9c")
	b, err := New(Options{ApplicationName: "api", PodEnv: "CB_TEST_POD"})
	if err != nil || b.pod != "web-7f9c" {
		t.Fatalf("pod from the environment: %v, %v", b, err)
	}
	b, err = New(Options{ApplicationName: "api", PodEnv: "CB_TEST_POD_UNSET"})
	if err != nil || b.pod == "" {
		t.Fatalf("pod from the host name: %v", err)
	}
	t.Setenv("CB_TEST_POD", "bad\tpod")
	if _, err := New(Options{ApplicationName: "api", PodEnv: "CB_TEST_POD"}); err == nil {
		t.Error("a pod id with a tab from the environment was accepted")
	}
}

// DSN gives the identity in the form the drivers read: the test reads it
// back with pgx's own parser.
func TestDSN(t *testing.T) {
	b, err := New(Options{ApplicationName: "api", Pod: `web 7\x'9`})
	if err != nil {
		t.Fatal(err)
	}
	wantOptions := `-c connbudget.pod=web\ 7\\x'9 -c connbudget.pool_session=` + b.session
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
