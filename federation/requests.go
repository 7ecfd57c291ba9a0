package federation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

const (
	requestCookiePrefix = "calipso_saml_"
	// maxPendingLogins bounds the request cookies one browser accumulates
	// from abandoned logins.
	maxPendingLogins = 5
)

// pendingLogin is an AuthnRequest this browser started, kept in a signed
// HttpOnly cookie scoped to the ACS so that any backend instance sharing the
// SP key can check InResponseTo.
type pendingLogin struct {
	ID         string `json:"id"`
	RelayState string `json:"rs,omitempty"`
	Expires    int64  `json:"exp"`
}

type requestTracker struct {
	prefix string // of the cookies' names; "" is requestCookiePrefix
	key    []byte // HMAC key derived from the SP private key
	path   string // ACS path: the cookie is sent nowhere else
	secure bool
	ttl    time.Duration
}

func (t requestTracker) cookiePrefix() string {
	if t.prefix != "" {
		return t.prefix
	}
	return requestCookiePrefix
}

func (t requestTracker) cookieName(id string) string { return t.cookiePrefix() + id }

func (t requestTracker) mac(name string, payload []byte) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)
}

func (t requestTracker) cookie(name, value string, maxAge int) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: t.path, MaxAge: maxAge, HttpOnly: true, Secure: t.secure}
	if t.secure {
		// The IdP posts to the ACS cross-site: Lax cookies would not come along.
		c.SameSite = http.SameSiteNoneMode
	}
	return c
}

func (t requestTracker) track(w http.ResponseWriter, r *http.Request, p pendingLogin, now time.Time) error {
	existing := t.pending(r, now)
	if len(existing) >= maxPendingLogins {
		slices.SortFunc(existing, func(a, b pendingLogin) int { return int(a.Expires - b.Expires) })
		for _, old := range existing[:len(existing)-maxPendingLogins+1] {
			t.forget(w, old.ID)
		}
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return err
	}
	name := t.cookieName(p.ID)
	value := base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(t.mac(name, payload))
	http.SetCookie(w, t.cookie(name, value, int(t.ttl/time.Second)))
	return nil
}

// pending returns the authentic, unexpired logins this browser started.
func (t requestTracker) pending(r *http.Request, now time.Time) []pendingLogin {
	var out []pendingLogin
	for _, c := range r.Cookies() {
		if !strings.HasPrefix(c.Name, t.cookiePrefix()) {
			continue
		}
		encPayload, encMAC, ok := strings.Cut(c.Value, ".")
		if !ok {
			continue
		}
		payload, err1 := base64.RawURLEncoding.DecodeString(encPayload)
		sum, err2 := base64.RawURLEncoding.DecodeString(encMAC)
		if err1 != nil || err2 != nil || !hmac.Equal(sum, t.mac(c.Name, payload)) {
			continue
		}
		var p pendingLogin
		if json.Unmarshal(payload, &p) != nil || t.cookieName(p.ID) != c.Name || now.Unix() >= p.Expires {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (t requestTracker) forget(w http.ResponseWriter, id string) {
	http.SetCookie(w, t.cookie(t.cookieName(id), "", -1))
}
