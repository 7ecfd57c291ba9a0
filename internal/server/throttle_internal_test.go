package server

import (
	"fmt"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// try is one attempt that fails (or not); it reports the refusal's limit, "" when let
// through.
func try(t *testing.T, th *throttle, addr, account string, fail bool) (string, time.Duration) {
	t.Helper()
	a, wait, limit := th.begin(addr, account)
	if a == nil {
		if wait <= 0 {
			t.Fatalf("refused by %s with no wait", limit)
		}
		return limit, wait
	}
	a.end(fail)
	return "", 0
}

// TestThrottleDecays: the limits refill, so no one is locked out for ever; a guesser
// gets accountEvery's pace, and an address that failed is forgotten after
// failedMemory.
func TestThrottleDecays(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	th := newThrottle(clock.now)
	for i := range accountBurst {
		if limit, _ := try(t, th, "203.0.113.1", "alice", true); limit != "" {
			t.Fatalf("failure %d refused by %s", i+1, limit)
		}
	}
	limit, wait := try(t, th, "203.0.113.1", "Alice", true) // usernames by their lower case
	if limit != "account" || wait > accountEvery {
		t.Fatalf("after %d failures: %q, wait %v; want the account limit, at most %v", accountBurst, limit, wait, accountEvery)
	}
	// Another address that never failed: let through (the user).
	if limit, _ := try(t, th, "198.51.100.7", "alice", false); limit != "" {
		t.Fatalf("a clean address refused by %s", limit)
	}
	// The guesser's pace: one more guess per accountEvery.
	clock.advance(accountEvery)
	if limit, _ := try(t, th, "203.0.113.1", "alice", true); limit != "" {
		t.Fatalf("after %v: refused by %s", accountEvery, limit)
	}
	if limit, _ := try(t, th, "203.0.113.1", "alice", true); limit != "account" {
		t.Fatalf("second guess within %v: %q, want the account limit", accountEvery, limit)
	}
	// A user who mistyped during the attack waits at most failedMemory.
	try(t, th, "198.51.100.7", "bob", true)
	if limit, _ := try(t, th, "198.51.100.7", "alice", false); limit != "account" {
		t.Fatalf("an address that just failed, on a guessed account: %q, want the account limit", limit)
	}
	for i := 0; i < 100; i++ { // the guesser keeps the account's bucket empty
		clock.advance(failedMemory / 100)
		try(t, th, "203.0.113.1", "alice", true)
	}
	if limit, _ := try(t, th, "198.51.100.7", "alice", false); limit != "" {
		t.Fatalf("after %v without failing, the user's address is still refused (%s)", failedMemory, limit)
	}
}

// TestThrottleAddressLimit: one address gets addressBurst failures, then one per
// addressEvery, whatever accounts it tries; successes and checks that could not be
// made cost nothing.
func TestThrottleAddressLimit(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	th := newThrottle(clock.now)
	for range 50 {
		if limit, _ := try(t, th, "192.0.2.1:5555", "carol", false); limit != "" {
			t.Fatalf("a success refused by %s", limit)
		}
	}
	for i := range addressBurst {
		if limit, _ := try(t, th, "192.0.2.1:5555", fmt.Sprintf("user%d", i), true); limit != "" {
			t.Fatalf("failure %d refused by %s", i+1, limit)
		}
	}
	limit, wait := try(t, th, "192.0.2.1:6666", "carol", false)
	if limit != "address" || wait > addressEvery {
		t.Fatalf("after %d failures: %q, wait %v; want the address limit, at most %v", addressBurst, limit, wait, addressEvery)
	}
	clock.advance(wait)
	if limit, _ := try(t, th, "192.0.2.1", "carol", false); limit != "" {
		t.Fatalf("after Retry-After: refused by %s", limit)
	}
}

// TestThrottleParallel: attempts under way hold their place, so a burst of parallel
// guesses can't overrun the bucket while the first ones are being checked.
func TestThrottleParallel(t *testing.T) {
	th := newThrottle(func() time.Time { return time.Unix(0, 0) })
	var started []*loginAttempt
	for range 3 * addressBurst {
		if a, _, _ := th.begin("192.0.2.9", "dave"); a != nil {
			started = append(started, a)
		}
	}
	if len(started) != accountBurst {
		t.Fatalf("%d parallel attempts let through, want %d (the account's burst)", len(started), accountBurst)
	}
	for _, a := range started {
		a.end(true)
	}
}

// TestThrottleMemoryBounded: a flood of made-up usernames and addresses keeps each
// table at throttleEntries.
func TestThrottleMemoryBounded(t *testing.T) {
	th := newThrottle(time.Now)
	for i := range throttleEntries + 5000 {
		a, _, _ := th.begin(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), fmt.Sprintf("u%d", i))
		if a != nil {
			a.end(true)
		}
	}
	if n, m := th.addresses.Len(), th.accounts.Len(); n > throttleEntries || m > throttleEntries {
		t.Fatalf("%d addresses, %d accounts tracked; want at most %d each", n, m, throttleEntries)
	}
	long := string(make([]byte, 10_000))
	th.begin("10.0.0.1", long)
	if _, ok := th.accounts.Peek(long[:maxThrottleKey]); !ok {
		t.Fatal("a long username is not kept by its first maxThrottleKey bytes")
	}
}
