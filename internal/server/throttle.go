package server

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Login throttling (POST login/ and umbrella/wuo/). Only failed attempts count, in two
// token buckets (golang.org/x/time/rate), which refill: nothing is locked for ever.
//
//   - Per source address (client(r).addr: X-Forwarded-For only from trusted proxies;
//     IPv6 by /64, which one subscriber holds): addressBurst failures, then one more
//     every addressEvery. While its bucket is empty, every attempt from the address is
//     answered 429, the right password too: the password is not even checked, so a
//     guesser learns nothing.
//   - Per account (whatever username is tried, known or not): accountBurst failures,
//     then one more every accountEvery, whichever addresses they come from. An empty
//     bucket refuses only addresses that failed a login within failedMemory: the user,
//     from an address of their own that has not failed, still logs in while someone
//     else guesses their password, so an attacker cannot lock a user out (one attempt
//     at a time: an address with attempts under way is not clean yet). A user who
//     mistyped during such an attack waits at most failedMemory (their address is then
//     clean again); a guesser with many addresses gets one guess per fresh address,
//     each address being held by its own bucket.
//
// The answer is 429 {"error"} with Retry-After (seconds until the bucket has room).
// Behind a proxy missing from trusted_proxies every client has the proxy's address,
// and one guesser holds everyone's logins: list the proxies. Memory is bounded: each
// table keeps at most throttleEntries keys, least recently used first out (a flood
// of made-up keys pushes out old ones, whose limits then start afresh).
const (
	addressBurst    = 10
	addressEvery    = 10 * time.Second
	accountBurst    = 5
	accountEvery    = time.Minute
	failedMemory    = 15 * time.Minute
	throttleEntries = 100_000
	// maxThrottleKey bounds a key's length (usernames are chosen by the caller).
	maxThrottleKey = 150
)

// throttle is the login throttle's state.
type throttle struct {
	addresses, accounts *lru.Cache[string, *bucket]
	now                 func() time.Time
	mu                  sync.Mutex // makes get-or-add atomic
}

// bucket is one key's failures: a token bucket (its tokens are the failures it still
// allows) and the attempts under way, each holding a token's place until its outcome
// is known, so that parallel attempts can't overrun the bucket.
type bucket struct {
	lim      *rate.Limiter
	mu       sync.Mutex
	inflight int
	// lastFail is when a login from this key last failed.
	lastFail time.Time
}

// room is how long until the bucket can take one more attempt (0: now). Call with mu held.
func (b *bucket) room(now time.Time) time.Duration {
	free := b.lim.TokensAt(now) - float64(b.inflight)
	if free >= 1 {
		return 0
	}
	return time.Duration((1 - free) / float64(b.lim.Limit()) * float64(time.Second))
}

func newThrottle(now func() time.Time) *throttle {
	a, _ := lru.New[string, *bucket](throttleEntries)
	b, _ := lru.New[string, *bucket](throttleEntries)
	return &throttle{addresses: a, accounts: b, now: now}
}

func (t *throttle) bucket(c *lru.Cache[string, *bucket], key string, every time.Duration, burst int) *bucket {
	if len(key) > maxThrottleKey {
		key = key[:maxThrottleKey]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, ok := c.Get(key); ok {
		return b
	}
	b := &bucket{lim: rate.NewLimiter(rate.Every(every), burst)}
	c.Add(key, b)
	return b
}

// addressKey is the throttled unit of a client address ("ip" or "ip:port"): the
// address itself for IPv4, its /64 for IPv6.
func addressKey(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// loginAttempt is one login under way.
type loginAttempt struct {
	t             *throttle
	addr, account *bucket // account nil: an address that has not failed, let through a full account
}

// begin starts an attempt of account from addr, or says how long to wait and which
// limit refused it ("address" or "account"). Call end with the outcome.
func (t *throttle) begin(addr, account string) (*loginAttempt, time.Duration, string) {
	now := t.now()
	a := &loginAttempt{t: t, addr: t.bucket(t.addresses, addressKey(addr), addressEvery, addressBurst),
		account: t.bucket(t.accounts, strings.ToLower(account), accountEvery, accountBurst)}
	a.addr.mu.Lock()
	defer a.addr.mu.Unlock()
	if d := a.addr.room(now); d > 0 {
		return nil, d, "address"
	}
	a.account.mu.Lock()
	defer a.account.mu.Unlock()
	if d := a.account.room(now); d > 0 {
		// An address with attempts under way is not known to be clean yet.
		if a.addr.inflight > 0 || !a.addr.lastFail.IsZero() && now.Sub(a.addr.lastFail) < failedMemory {
			return nil, d, "account"
		}
		a.account = nil // a clean address: the user, while someone else guesses
	}
	a.addr.inflight++
	if a.account != nil {
		a.account.inflight++
	}
	return a, 0, ""
}

// end records the attempt's outcome: a failure takes a token of each bucket; a
// success, or a check that could not be made (the user office down), takes none.
func (a *loginAttempt) end(failed bool) {
	now := a.t.now()
	for _, b := range []*bucket{a.addr, a.account} {
		if b == nil {
			continue
		}
		b.mu.Lock()
		b.inflight--
		if failed {
			b.lim.ReserveN(now, 1) // taken, with no wait: begin made room for it
			b.lastFail = now
		}
		b.mu.Unlock()
	}
}

// throttled answers 429 with Retry-After.
func (s *server) throttled(w http.ResponseWriter, r *http.Request, method, reason string, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	s.metrics.throttledLogin(method, reason)
	s.Log.WarnContext(r.Context(), "login throttled", "method", method, "limit", reason, "client", client(r).addr, "retry_after", secs)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	who := "from this address"
	if reason == "account" {
		who = "for this account from this address"
	}
	writeError(w, r, s.Log, fmt.Errorf("%w %s: try again in %d s", errThrottled, who, secs))
}
