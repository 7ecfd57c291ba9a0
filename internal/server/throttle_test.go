package server_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loginFrom posts login/ as the frontend does, from the client address addr (sent
// as X-Forwarded-For: believed only when the harness trusts the loopback proxy).
func loginFrom(b *browser, addr, user, password string) answer {
	b.t.Helper()
	b.header.Set("X-Forwarded-For", addr)
	defer b.header.Del("X-Forwarded-For")
	return b.do(http.MethodPost, "login/", map[string]string{"username": user, "password": password})
}

// wantThrottled checks a 429 with Retry-After (whole seconds, at most max) and
// {"error"}.
func wantThrottled(t testing.TB, a answer, max time.Duration) {
	t.Helper()
	wantError(t, a, http.StatusTooManyRequests)
	secs, err := strconv.Atoi(a.header.Get("Retry-After"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > max {
		t.Fatalf("Retry-After %q, want 1..%v seconds", a.header.Get("Retry-After"), max)
	}
}

// TestLoginThrottle (security review, finding 3): 100 wrong passwords in a row were
// all checked and the right one was accepted right after. Failures are throttled per
// account and per source address (429, Retry-After), the password is no longer
// checked once throttled, and the user still logs in from an address of their own
// that has not failed while someone else guesses.
func TestLoginThrottle(t *testing.T) {
	h := newHarness(t, trustLoopback())
	const attacker, user, sprayer = "203.0.113.66", "198.51.100.7", "203.0.113.99"

	t.Run("one account from one address", func(t *testing.T) {
		b := h.browser().in(t)
		refused, throttled := 0, 0
		for i := range 100 {
			a := loginFrom(b, attacker, "alice", fmt.Sprintf("guess-%d", i))
			switch a.status {
			case http.StatusUnauthorized:
				refused++
			case http.StatusTooManyRequests:
				throttled++
				wantThrottled(t, a, time.Minute)
			default:
				t.Fatalf("guess %d: %d %s", i, a.status, a.body)
			}
		}
		if refused > 5 || throttled < 95 {
			t.Fatalf("%d guesses checked, %d throttled: want at most 5 checked", refused, throttled)
		}
		// The right password from the guessing address is not even checked.
		wantThrottled(t, loginFrom(b, attacker, "alice", "alice-demo"), time.Minute)
		wantStatus(t, b.do(http.MethodGet, "users/alice/", nil), http.StatusUnauthorized)
	})

	t.Run("the user is not locked out", func(t *testing.T) {
		b := h.browser().in(t)
		wantStatus(t, loginFrom(b, user, "alice", "alice-demo"), http.StatusOK)
		wantStatus(t, b.do(http.MethodGet, "users/alice/", nil), http.StatusOK)
		// Others' accounts from the guessing address are not locked either.
		wantStatus(t, loginFrom(h.browser().in(t), attacker, "bob", "bob-demo"), http.StatusOK)
	})

	t.Run("many accounts from one address", func(t *testing.T) {
		b := h.browser().in(t)
		checked := 0
		for i := range 30 {
			a := loginFrom(b, sprayer, fmt.Sprintf("user%02d", i), "password")
			if a.status == http.StatusTooManyRequests {
				wantThrottled(t, a, 10*time.Second)
				continue
			}
			wantStatus(t, a, http.StatusUnauthorized)
			checked++
		}
		if checked > 10 {
			t.Fatalf("%d guesses on fresh accounts from one address checked, want at most 10", checked)
		}
		// While the address is held, the right password is not checked either.
		wantThrottled(t, loginFrom(b, sprayer, "carol", "carol-demo"), 10*time.Second)
	})

	t.Run("IPv6 by /64", func(t *testing.T) {
		b := h.browser().in(t)
		for i := range 20 {
			loginFrom(b, fmt.Sprintf("2001:db8:1:2::%x", i+1), fmt.Sprintf("v6user%02d", i), "password")
		}
		wantThrottled(t, loginFrom(b, "2001:db8:1:2:ffff::1", "v6other", "password"), 10*time.Second)
	})

	t.Run("umbrella wuo", func(t *testing.T) {
		b := h.browser().in(t)
		b.header.Set("X-Forwarded-For", "203.0.113.77")
		throttled := false
		for range 20 {
			a := b.do(http.MethodPost, "umbrella/wuo/", map[string]string{"EAAHash": "forged", "uid": "alice"})
			if a.status == http.StatusTooManyRequests {
				wantThrottled(t, a, time.Minute)
				throttled = true
				break
			}
			if a.status != http.StatusForbidden {
				t.Fatalf("wuo/ with a forged hash: %d %s", a.status, a.body)
			}
		}
		if !throttled {
			t.Fatal("20 forged umbrella/wuo/ posts, none throttled")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		a := h.browser().in(t).send(mustRequest(t, http.MethodGet, h.srv.URL+"/metrics"))
		for _, want := range []string{
			`calipso_login_throttled_total{limit="account",method="local"}`,
			`calipso_login_throttled_total{limit="address",method="local"}`,
			`calipso_login_throttle_entries{table="address"}`,
			`calipso_login_throttle_entries{table="account"}`,
		} {
			if !strings.Contains(string(a.body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if !strings.Contains(string(a.body), `method="umbrella"}`) {
			t.Errorf("metrics lack the throttled umbrella/wuo/ posts")
		}
	})
}

// TestLoginThrottleUntrustedForwardedFor: a client that is not a trusted proxy can't
// escape the address limit by sending its own X-Forwarded-For.
func TestLoginThrottleUntrustedForwardedFor(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	checked := 0
	for i := range 30 {
		a := loginFrom(b, fmt.Sprintf("192.0.2.%d", i+1), fmt.Sprintf("user%02d", i), "password")
		if a.status == http.StatusUnauthorized {
			checked++
		}
	}
	if checked > 10 {
		t.Fatalf("%d guesses checked with made-up X-Forwarded-For, want at most 10", checked)
	}
}

func mustRequest(t testing.TB, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
