package connbudget

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const goodShare = "protocol=2 status=ok max_size=5 min_size=1 allocation=10 pods=2 budget=80 refresh_ms=1000 connections=4"

func TestParseShareReadsTheProtocolsWords(t *testing.T) {
	sh, err := parseShare(goodShare)
	if err != nil {
		t.Fatal(err)
	}
	want := share{text: goodShare, status: "ok", maxSize: 5, minSize: 1, budget: 80, refreshMS: 1000, allocation: 10, pods: 2}
	if sh != want {
		t.Fatalf("parseShare(%q) = %+v, want %+v", goodShare, sh, want)
	}
	// a later version's words, whatever they hold, are skipped
	sh, err = parseShare("status=ok future=x=y max_size=3 min_size=0 budget=9 refresh_ms=10 weight= " +
		strings.Repeat("z", 300) + "=1")
	if err != nil || sh.maxSize != 3 || sh.refreshMS != 10 {
		t.Fatalf("unknown words: %+v, %v", sh, err)
	}
	for text, status := range map[string]string{
		"protocol=2 status=other":                                      "other",
		"protocol=2 status=left max_size=0":                            "left",
		"protocol=2 status=refused sqlstate=42501 reason=max_pods":     "refused",
		"status=refused sqlstate=not-a-state reason=Drop;Table max=-1": "refused",
	} {
		sh, err := parseShare(text)
		if err != nil || sh.status != status {
			t.Errorf("parseShare(%q) = %+v, %v; want status %s", text, sh, err, status)
		}
	}
}

// Every hostile or malformed share is an error, never a size.
func TestParseShareRefusesHostileAnswers(t *testing.T) {
	base := "protocol=2 status=ok min_size=0 budget=80 refresh_ms=1000 "
	for _, text := range []string{
		"",
		" ",
		"status=ok  max_size=5",
		goodShare + " ",
		" " + goodShare,
		"status=ok max_size",
		"=5 " + goodShare,
		"status=bogus",
		"status=OK",
		"status=unavailable",
		"protocol=2 max_size=5",
		"status=ok=1",
		"protocol=1 status=other",
		"protocol=abc status=other",
		base + "max_size=abc",
		base + "max_size=+5",
		base + "max_size=5.0",
		base + "max_size=0x10",
		base + "max_size=1e3",
		base + "max_size=",
		base + "max_size=-",
		base + "max_size=5\t",
		base + "max_size=\uff15", // a fullwidth digit
		base + "max_size=5\x00",
		base + "max_size=-1",
		base + "max_size=262144",
		base + "max_size=99999999999",
		base + "max_size=99999999999999999999999",
		base + "max_size=81",
		"status=ok max_size=5 min_size=6 budget=80 refresh_ms=1000",
		"status=ok max_size=5 min_size=0 budget=80 refresh_ms=9",
		"status=ok max_size=5 min_size=0 budget=80 refresh_ms=3600001",
		"status=ok max_size=5 min_size=0 budget=80",
		"status=ok",
		base + "max_size=5 max_size=6",
		"status=ok status=ok max_size=5 min_size=0 budget=80 refresh_ms=1000",
		base + "max_size=5 pods=abc",
		base + "max_size=5 allocation=-3",
		strings.Repeat("x=1 ", 1100) + goodShare,
	} {
		sh, err := parseShare(text)
		if !errors.Is(err, errAnswer) {
			t.Errorf("parseShare(%q) = %+v, %v: not an answer error", text, sh, err)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x00\t\n") {
			t.Errorf("parseShare(%q): the message carries the server's control bytes: %q", text, err)
		}
	}
}

// unitBudget is a Budget that follows no pool, for the tests of its own
// logic: what it makes of answers, demand and pace.
func unitBudget(t *testing.T, opts Options, poolMax int) *Budget {
	t.Helper()
	opts.ApplicationName, opts.Pod, opts.Logf = "unit", "unit-pod", t.Logf
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.poolMax = poolMax
	return b
}

// take hands b the server's answer text as a refresh does.
func take(b *Budget, text string, demand int) time.Duration {
	sh, err := parseShare(text)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.takeLocked(sh, err, demand)
}

// Before its first good answer a pool holds one connection, whatever the
// server answers; after it, a bad answer never changes its size.
func TestOnlyGoodAnswersSizeThePool(t *testing.T) {
	b := unitBudget(t, Options{}, 0)
	take(b, "status=ok max_size=50 min_size=0 budget=40 refresh_ms=1000", 1)
	if s := b.Stats(); s.Limit != 1 || s.Share != -1 || s.Errors.Answer != 1 || s.Refreshes != 0 {
		t.Fatalf("after a bad first answer: %+v", s)
	}
	take(b, goodShare, 1)
	if s := b.Stats(); s.Limit != 5 || s.Share != 5 || s.Status != "ok" || s.Refreshes != 1 {
		t.Fatalf("after a good answer: %+v", s)
	}
	for _, text := range []string{"status=ok max_size=abc", "status=ok max_size=9 min_size=0 budget=8 refresh_ms=10", "bogus"} {
		take(b, text, 1)
	}
	if s := b.Stats(); s.Limit != 5 || s.Share != 5 || s.Refreshes != 1 || s.Errors.Answer != 4 {
		t.Fatalf("after bad answers: %+v", s)
	}
	b.mu.Lock()
	b.takeLocked(share{}, stateError("57P01"), 1)
	b.mu.Unlock()
	if s := b.Stats(); s.Limit != 5 || s.Errors.Query != 1 {
		t.Fatalf("after a failed query: %+v", s)
	}
}

func TestStatusesWithoutAShare(t *testing.T) {
	b := unitBudget(t, Options{}, 6)
	take(b, "protocol=2 status=other", 1)
	if s := b.Stats(); s.Status != "other" || s.Limit != 6 {
		t.Fatalf("other: %+v", s)
	}
	take(b, goodShare, 1)
	next := take(b, "protocol=2 status=refused sqlstate=42501 reason=role_may_not_claim", 1)
	if s := b.Stats(); s.Status != "refused" || s.Limit != 5 || s.Errors.Refused != 1 {
		t.Fatalf("refused: %+v", s)
	}
	if next < 10*time.Second {
		t.Errorf("a refused pool asks again in %v, want 10 intervals (10 s)", next)
	}
	take(b, "protocol=2 status=left max_size=0", 1)
	if s := b.Stats(); s.Status != "left" || s.Limit != 5 {
		t.Fatalf("left: %+v", s)
	}
	// a server without connbudget: a fixed size, looked for again in 30 s
	b.mu.Lock()
	next = b.takeLocked(share{}, stateError("42704"), 1)
	b.mu.Unlock()
	if s := b.Stats(); s.Status != "no-extension" || s.Limit != 6 || s.Errors.NoExtension != 1 {
		t.Fatalf("no extension: %+v", s)
	}
	if next < 27*time.Second || next > 33*time.Second {
		t.Errorf("looks for the extension again in %v, want about 30 s", next)
	}
}

// The pace of protocol section 2: the second refresh at a random 10% to
// 100% of the interval; a changed demand asked about again one publish
// period later; a steady one every interval, jittered; a share of 0 no
// sooner than an interval.
func TestRefreshPace(t *testing.T) {
	b := unitBudget(t, Options{}, 0)
	const share8 = "status=ok max_size=8 min_size=0 budget=40 refresh_ms=200"
	if next := take(b, share8, 1); next < 20*time.Millisecond || next > 200*time.Millisecond {
		t.Errorf("second refresh in %v, want 20 to 200 ms", next)
	}
	for i := 0; i < 20; i++ {
		if next := take(b, share8, 1); next < 180*time.Millisecond || next > 220*time.Millisecond {
			t.Errorf("steady refresh in %v, want 180 to 220 ms", next)
		}
	}
	if next := take(b, share8, 15); next != 20*time.Millisecond {
		t.Errorf("after a changed demand: next in %v, want the publish period 20 ms", next)
	}
	for i := 0; i < 20; i++ {
		if next := take(b, "status=ok max_size=0 min_size=0 budget=40 refresh_ms=200", 15); next < 200*time.Millisecond || next > 240*time.Millisecond {
			t.Errorf("a share of 0: next in %v, want 200 to 240 ms", next)
		}
	}
	if s := b.Stats(); s.Demand != 15 || s.Limit != 1 || s.RefreshInterval != 200*time.Millisecond {
		t.Errorf("%+v", s)
	}
	if publishPeriod(50*time.Millisecond) != 10*time.Millisecond || publishPeriod(time.Hour) != time.Second {
		t.Error("the publish period is not within 10 ms and 1 s")
	}
}

func TestDemandIsSmoothed(t *testing.T) {
	b := unitBudget(t, Options{MinSize: 2}, 30)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range []struct{ peak, older, want int }{
		{0, 0, 2},   // at least the pool's minimum
		{4, 0, 5},   // 4 + 1
		{8, 0, 10},  // 8 + 25%
		{1, 16, 20}, // a busy moment of the last 5 intervals counts
		{40, 0, 30}, // at most the pool's maximum
	} {
		b.peaks = [6]int{0, 0, c.older, 0, 0, 0}
		b.peaks[b.now] = c.peak
		if got := b.demandLocked(); got != c.want {
			t.Errorf("peak %d, older %d: demand %d, want %d", c.peak, c.older, got, c.want)
		}
	}
}

// stateError is an error with a SQLSTATE, as the drivers' errors have.
type stateError string

func (e stateError) Error() string    { return "SQLSTATE " + string(e) }
func (e stateError) SQLState() string { return string(e) }
