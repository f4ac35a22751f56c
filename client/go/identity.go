package connbudget

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// checkID reports whether id can name an application, a pod or a pool
// session: 1 to 63 bytes of printable ASCII. The server refuses any other
// pod or pool session id at connect time (SQLSTATE 22023), and stores an
// application_name with other bytes replaced, so that it would not match
// its row in connbudget.application_limits.
func checkID(what, id string) error {
	if id == "" || len(id) > 63 {
		return fmt.Errorf("connbudget: %s %q is not 1 to 63 bytes", what, id)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return fmt.Errorf("connbudget: %s %q is not printable ASCII", what, id)
		}
	}
	return nil
}

// defaultPod is the pod id when Options.Pod is empty: the environment
// variable Options.PodEnv names, else the host name, which is the pod's
// name in Kubernetes.
func defaultPod(env string) (string, error) {
	if env != "" {
		if pod := os.Getenv(env); pod != "" {
			return pod, nil
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "", fmt.Errorf("connbudget: no pod id: Options.Pod is empty and the host name is unknown (%v)", err)
	}
	if len(host) > 63 {
		host = host[:63]
	}
	return host, nil
}

// newPoolSession is a random id for one pool: pools that share a pod id
// (the processes of a pre-fork server, several pools in one process) split
// the pod's share instead of each taking all of it.
func newPoolSession() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("connbudget: no random pool session id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// StartupOptions is the value of the options startup parameter that gives
// the server this pool's pod and pool session:
//
//	-c connbudget.pod=<pod> -c connbudget.pool_session=<session>
//
// DSN adds it to a connection string; set it yourself where you build the
// driver's configuration in code (pgx: ConnConfig.RuntimeParams["options"],
// after any options of your own).
func (b *Budget) StartupOptions() string {
	return "-c connbudget.pod=" + escapeOption(b.pod) +
		" -c connbudget.pool_session=" + escapeOption(b.session)
}

// escapeOption escapes a value for the options startup parameter, which
// the server splits at spaces, with a backslash taking the next byte as it is.
func escapeOption(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' || s[i] == '\\' {
			out.WriteByte('\\')
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// DSN returns the connection string dsn with this pool's identity added:
// application_name, and connbudget.pod and connbudget.pool_session in
// options (after options dsn already has). dsn is a URL
// (postgres://user@host/db?sslmode=disable) or key=value pairs
// (host=db user=api), as lib/pq and pgx take them; the result has the same
// form. An application_name in dsn is replaced; connbudget settings in its
// options are an error, since they would contradict the pool's own.
func (b *Budget) DSN(dsn string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("connbudget: the connection URL does not parse: %w", err)
		}
		q := u.Query()
		options, err := b.mergeOptions(q.Get("options"))
		if err != nil {
			return "", err
		}
		q.Set("application_name", b.app)
		q.Set("options", options)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	pairs, err := parseKeywords(dsn)
	if err != nil {
		return "", err
	}
	var out []string
	user := ""
	for _, p := range pairs {
		switch p[0] {
		case "application_name":
		case "options":
			user = p[1]
		default:
			out = append(out, p[0]+"="+quoteKeyword(p[1]))
		}
	}
	options, err := b.mergeOptions(user)
	if err != nil {
		return "", err
	}
	out = append(out, "application_name="+quoteKeyword(b.app), "options="+quoteKeyword(options))
	return strings.Join(out, " "), nil
}

func (b *Budget) mergeOptions(user string) (string, error) {
	if strings.Contains(user, "connbudget.") {
		return "", fmt.Errorf("connbudget: the connection string's options already set connbudget settings (%q); give the pod as Options.Pod", user)
	}
	if strings.TrimSpace(user) == "" {
		return b.StartupOptions(), nil
	}
	return user + " " + b.StartupOptions(), nil
}

// parseKeywords reads a libpq key=value connection string as libpq does:
// spaces around '=', values in single quotes, a backslash taking the next
// character as it is.
func parseKeywords(s string) ([][2]string, error) {
	var pairs [][2]string
	i := 0
	space := func() {
		for i < len(s) && strings.IndexByte(" \t\n\r\v\f", s[i]) >= 0 {
			i++
		}
	}
	for {
		space()
		if i == len(s) {
			return pairs, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && strings.IndexByte(" \t\n\r\v\f", s[i]) < 0 {
			i++
		}
		key := s[start:i]
		space()
		if i == len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("connbudget: the connection string has no \"=\" after %q", key)
		}
		i++
		space()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			for i++; ; i++ {
				if i == len(s) {
					return nil, fmt.Errorf("connbudget: the connection string has an unterminated quoted value for %q", key)
				}
				if s[i] == '\'' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
		} else {
			for ; i < len(s) && strings.IndexByte(" \t\n\r\v\f", s[i]) < 0; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
		}
		pairs = append(pairs, [2]string{key, val.String()})
	}
}

// quoteKeyword quotes a value for a key=value connection string.
func quoteKeyword(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
