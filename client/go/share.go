package connbudget

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// The bounds of what a server may answer (docs/protocol.md, section 4):
// sizes within the most backends PostgreSQL allows, intervals within the
// range of connbudget.refresh_interval.
const (
	maxBackends  = 262143
	minRefreshMS = 10
	maxRefreshMS = 3600000
	maxShareText = 4096
	maxPods      = 1000000
)

// What the share says of the pool.
const (
	statusOK      = "ok"      // a share: sizes within [min_size, max_size]
	statusOther   = "other"   // not governed: a fixed size
	statusLeft    = "left"    // handed back; a report brings it back
	statusRefused = "refused" // governed no more: sqlstate and reason say why
	// no usable connbudget on the server: a fixed size
	statusNoExtension = "no-extension"
)

// share is one answer of the server, checked.
type share struct {
	status     string
	maxSize    int
	minSize    int
	budget     int
	refreshMS  int
	allocation int // -1: not said
	pods       int // -1: not said
	sqlstate   string
	reason     string
}

// An answerError is an answer that is not one: never a size. Kind names
// what was wrong, so that each kind is logged once however often a server
// repeats it.
type answerError struct {
	kind string
	text string
}

func (e *answerError) Error() string { return e.text }

// The kinds of answer errors, as counted in Stats.Errors.
const (
	badShape = "answer-shape" // not one row of the expected columns
	badNull  = "answer-null"  // NULL where a value must be
	badText  = "answer-text"  // not words key=value, not a number, an unknown status
	badRange = "answer-range" // a number out of its range
	badOrder = "answer-order" // min_size > max_size or max_size > budget
)

func badAnswer(kind, format string, args ...any) *answerError {
	return &answerError{kind: kind, text: fmt.Sprintf(format, args...)}
}

// parseNumber reads a number as every number from a server is read: the
// whole of text a base-10 integer (digits after an optional '-'; no '+',
// no space, nothing before or after) within [lo, hi].
func parseNumber(text string, lo, hi int64) (int64, string) {
	digits := strings.TrimPrefix(text, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, badText
	}
	v, err := strconv.ParseInt(text, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, badRange
	}
	return v, ""
}

// quote shows a server's value in a log line: at most 64 bytes of it,
// quoted, with anything but printable ASCII escaped, so that an answer
// cannot forge or flood log lines.
func quote(s string) string {
	cut := len(s) > 64
	if cut {
		s = s[:64]
	}
	q := strconv.QuoteToASCII(s)
	if cut {
		q += "..."
	}
	return q
}

// parseShare checks connbudget.share (docs/protocol.md, sections 4 and 9):
// words key=value one space apart; words it does not know are skipped; a
// known word twice, a word without '=', a number that is not a complete
// integer in its range, an unknown status, or a status "ok" without
// max_size, min_size, budget and refresh_ms in order, is an error.
func parseShare(text string) (share, error) {
	sh := share{allocation: -1, pods: -1}
	if len(text) > maxShareText || strings.IndexByte(text, 0) >= 0 {
		return sh, badAnswer(badText, "connbudget.share is %s, not text", quote(text))
	}
	seen := map[string]bool{}
	for _, word := range strings.Split(text, " ") {
		eq := strings.IndexByte(word, '=')
		if eq <= 0 {
			return sh, badAnswer(badText, "connbudget.share is %s, not words key=value", quote(text))
		}
		key, value := word[:eq], word[eq+1:]
		var field *int
		lo, hi := int64(0), int64(maxBackends)
		switch key {
		case "status":
			switch value {
			case statusOK, statusOther, statusLeft, statusRefused:
				sh.status = value
			default:
				return sh, badAnswer(badText, "connbudget.share is %s: no status this client knows", quote(text))
			}
		case "protocol":
			if _, bad := parseNumber(value, 2, 1000); bad != "" {
				return sh, badAnswer(badText, "connbudget.share is %s: protocol is not a version", quote(text))
			}
		case "sqlstate":
			if len(value) == 5 && strings.Trim(value, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == "" {
				sh.sqlstate = value
			}
		case "reason":
			if len(value) <= 32 && strings.Trim(value, "abcdefghijklmnopqrstuvwxyz_") == "" {
				sh.reason = value
			}
		case "max_size":
			field = &sh.maxSize
		case "min_size":
			field = &sh.minSize
		case "budget":
			field = &sh.budget
		case "allocation":
			field = &sh.allocation
		case "pods":
			field, hi = &sh.pods, maxPods
		case "refresh_ms":
			field, lo, hi = &sh.refreshMS, minRefreshMS, maxRefreshMS
		default:
			continue // a later version's word
		}
		if seen[key] {
			return sh, badAnswer(badShape, "connbudget.share is %s: %s twice", quote(text), key)
		}
		seen[key] = true
		if field != nil {
			v, bad := parseNumber(value, lo, hi)
			if bad != "" {
				what := "is not an integer"
				if bad == badRange {
					what = fmt.Sprintf("is out of range [%d, %d]", lo, hi)
				}
				return sh, badAnswer(bad, "connbudget.share is %s: %s %s", quote(text), key, what)
			}
			*field = int(v)
		}
	}
	if sh.status == "" {
		return sh, badAnswer(badText, "connbudget.share is %s: no status", quote(text))
	}
	if sh.status != statusOK {
		return sh, nil
	}
	if !seen["max_size"] || !seen["min_size"] || !seen["budget"] || !seen["refresh_ms"] {
		return sh, badAnswer(badShape, "connbudget.share is %s: a share without max_size, min_size, budget and refresh_ms", quote(text))
	}
	return sh, checkOrder(sh, "connbudget.share")
}

func checkOrder(sh share, what string) error {
	if sh.minSize > sh.maxSize {
		return badAnswer(badOrder, "%s answered min_size %d above max_size %d", what, sh.minSize, sh.maxSize)
	}
	if sh.maxSize > sh.budget {
		return badAnswer(badOrder, "%s answered max_size %d above budget %d", what, sh.maxSize, sh.budget)
	}
	return nil
}

// parsePoolShare checks an answer of connbudget.pool_share() (protocol 1):
// max_size, min_size, budget and refresh_ms, none NULL, each a complete
// integer in its range, in order.
func parsePoolShare(values []sql.NullString) (share, error) {
	sh := share{status: statusOK, allocation: -1, pods: -1}
	names := []string{"max_size", "min_size", "budget", "refresh_ms"}
	fields := []*int{&sh.maxSize, &sh.minSize, &sh.budget, &sh.refreshMS}
	if len(values) != len(names) {
		return sh, badAnswer(badShape, "connbudget.pool_share() answered %d columns, not 4", len(values))
	}
	for i, v := range values {
		if !v.Valid {
			return sh, badAnswer(badNull, "connbudget.pool_share() answered NULL for %s", names[i])
		}
		lo, hi := int64(0), int64(maxBackends)
		if i == 3 {
			lo, hi = minRefreshMS, maxRefreshMS
		}
		n, bad := parseNumber(v.String, lo, hi)
		if bad != "" {
			return sh, badAnswer(bad, "connbudget.pool_share() answered %s %s, not an integer in [%d, %d]", names[i], quote(v.String), lo, hi)
		}
		*fields[i] = int(n)
	}
	return sh, checkOrder(sh, "connbudget.pool_share()")
}

// statedMS reads the number after lead in text, ended by tail (or, without
// a tail, by the end of a word), as any number from a server is read: a
// pace from 10 to 3600000 ms; 0 when text states none.
func statedMS(text, lead, tail string) int {
	at := strings.Index(text, lead)
	if at < 0 {
		return 0
	}
	rest := text[at+len(lead):]
	n := 0
	for n < len(rest) && n <= 10 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > 10 {
		return 0
	}
	if tail != "" && !strings.HasPrefix(rest[n:], tail) {
		return 0
	}
	if tail == "" && n < len(rest) && rest[n] != ' ' && rest[n] != '\n' {
		return 0
	}
	v, bad := parseNumber(rest[:n], minRefreshMS, maxRefreshMS)
	if bad != "" {
		return 0
	}
	return int(v)
}
