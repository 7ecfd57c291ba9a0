package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"

	"github.com/calipsoplus/calipso/internal/store"
)

// sessionCookie is the session cookie's name, as Django's.
const sessionCookie = "sessionid"

// keyUsername is the session value naming the logged-in account.
const keyUsername = "username"

// sessionUserKey holds, in a loaded session's values, the account read with it.
type sessionUserKey struct{}

// dbSessionStore is a gorilla/sessions Store that keeps sessions in the application
// database: the cookie holds only a signed random token, so logout (or an admin
// removing a user) really ends the session, wherever the cookie went: at once through
// this server, within the cache's ttl when another process removes the account.
type dbSessionStore struct {
	db      *store.Store
	codec   securecookie.Codec
	options sessions.Options
	cache   *sessionCache
}

func newSessionStore(db *store.Store, secret []byte, opts sessions.Options, ttl time.Duration) *dbSessionStore {
	codec := securecookie.New(secret, nil)
	codec.MaxAge(opts.MaxAge)
	return &dbSessionStore{db: db, codec: codec, options: opts, cache: newSessionCache(ttl)}
}

// sessionCache keeps recently read sessions, keyed by the cookie's value (which also
// spares decoding it), for at most ttl: each request of a browser otherwise costs a
// database read. This process's own changes (login, logout, a user's rights or
// experiments) forget the entries they touch; another process's show within ttl.
type sessionCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedSession
	gen uint64 // moved by forget: a read that began before it is not kept
	// sweep is when expired entries are next dropped: m holds only the sessions of
	// the last moments, and forget's scan stays short.
	sweep time.Time
}

type cachedSession struct {
	token string
	su    store.SessionUser
	until time.Time
}

// maxCachedSessions bounds the memory a crowd of browsers can take.
const maxCachedSessions = 50_000

func newSessionCache(ttl time.Duration) *sessionCache {
	return &sessionCache{ttl: ttl, m: map[string]cachedSession{}}
}

// get returns the entry for cookie, if fresh, and the generation to pass to put.
func (c *sessionCache) get(cookie string, now time.Time) (cachedSession, uint64, bool) {
	if c.ttl <= 0 {
		return cachedSession{}, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[cookie]
	if ok && !now.Before(e.until) {
		delete(c.m, cookie)
		ok = false
	}
	return e, c.gen, ok
}

// put keeps what was read, unless something was forgotten since get returned gen.
func (c *sessionCache) put(cookie, token string, su store.SessionUser, now time.Time, gen uint64) {
	if c.ttl <= 0 {
		return
	}
	until := now.Add(c.ttl)
	if su.Expires.Before(until) {
		until = su.Expires
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.m) >= maxCachedSessions || now.After(c.sweep) {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxCachedSessions {
			clear(c.m)
		}
		c.sweep = now.Add(c.ttl)
	}
	c.m[cookie] = cachedSession{token: token, su: su, until: until}
}

// forget drops the entries of a session token, or (token "") of a username.
func (c *sessionCache) forget(token, username string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.m {
		if (token != "" && e.token == token) || (token == "" && e.su.Username == username) {
			delete(c.m, k)
		}
	}
}

// forgetUser makes the next request of every session of username read the
// database: call it after changing what a session carries of the account.
func (s *dbSessionStore) forgetUser(username string) { s.cache.forget("", username) }

// Get returns the request's session, cached for the request by gorilla's registry.
func (s *dbSessionStore) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New loads the session named by the cookie, or a new empty one.
func (s *dbSessionStore) New(r *http.Request, name string) (*sessions.Session, error) {
	sess := sessions.NewSession(s, name)
	opts := s.options
	sess.Options = &opts
	sess.IsNew = true
	c, err := r.Cookie(name)
	if err != nil {
		return sess, nil
	}
	now := time.Now()
	cached, gen, ok := s.cache.get(c.Value, now)
	token, su := cached.token, cached.su
	if !ok {
		if err := s.codec.Decode(name, c.Value, &token); err != nil {
			return sess, nil // forged, expired or from an old key: start afresh
		}
		su, err = s.db.HTTPSessionUser(r.Context(), token)
		if errors.Is(err, store.ErrNotFound) {
			return sess, nil
		}
		if err != nil {
			return sess, err
		}
		s.cache.put(c.Value, token, su, now, gen)
	}
	values := map[string]string{}
	if err := json.Unmarshal([]byte(su.Data), &values); err != nil {
		return sess, nil
	}
	for k, v := range values {
		sess.Values[k] = v
	}
	sess.Values[keyUsername] = su.Username
	if su.User != nil {
		// Read with the session, so that currentUser needs no second query.
		sess.Values[sessionUserKey{}] = *su.User
	}
	sess.ID = token
	sess.IsNew = false
	return sess, nil
}

// Save writes the session and its cookie; MaxAge < 0 deletes both.
func (s *dbSessionStore) Save(r *http.Request, w http.ResponseWriter, sess *sessions.Session) error {
	ctx := r.Context()
	if sess.ID != "" {
		s.cache.forget(sess.ID, "")
	}
	if sess.Options.MaxAge < 0 {
		if sess.ID != "" {
			if err := s.db.DeleteHTTPSession(ctx, sess.ID); err != nil {
				return err
			}
		}
		http.SetCookie(w, sessions.NewCookie(sess.Name(), "", sess.Options))
		return nil
	}
	fresh := sess.ID == ""
	if fresh {
		sess.ID = rand.Text() + rand.Text() // 2 × 128 bits
	}
	values := map[string]string{}
	username := ""
	for k, v := range sess.Values {
		if _, ok := k.(sessionUserKey); ok {
			continue // the account read with the session, not a value of it
		}
		ks, ok1 := k.(string)
		vs, ok2 := v.(string)
		if !ok1 || !ok2 {
			return fmt.Errorf("session value %v: only strings are stored", k)
		}
		if ks == keyUsername {
			username = vs
			continue
		}
		values[ks] = vs
	}
	data, _ := json.Marshal(values)
	expires := time.Now().Add(time.Duration(sess.Options.MaxAge) * time.Second)
	save := s.db.SaveHTTPSession
	if fresh {
		save = s.db.CreateHTTPSession
	}
	if err := save(ctx, sess.ID, username, string(data), expires); err != nil {
		return err
	}
	encoded, err := s.codec.Encode(sess.Name(), sess.ID)
	if err != nil {
		return err
	}
	http.SetCookie(w, sessions.NewCookie(sess.Name(), encoded, sess.Options))
	return nil
}

// rotate ends the current session and starts a new one with the same values: a login
// must never reuse a token that existed before it (session fixation).
func (s *dbSessionStore) rotate(ctx context.Context, sess *sessions.Session) error {
	if sess.ID != "" {
		s.cache.forget(sess.ID, "")
		if err := s.db.DeleteHTTPSession(ctx, sess.ID); err != nil {
			return err
		}
	}
	sess.ID = ""
	return nil
}
