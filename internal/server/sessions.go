package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"

	"github.com/calipsoplus/calipso/internal/store"
)

// sessionCookie is the session cookie's name, as Django's.
const sessionCookie = "sessionid"

// Session value keys.
const (
	keyUsername     = "username"
	keyUmbrellaHash = "umbrella_hash"
	keyUmbrellaUID  = "umbrella_uid"
)

// sessionUserKey holds, in a loaded session's values, the account read with it.
type sessionUserKey struct{}

// dbSessionStore is a gorilla/sessions Store that keeps sessions in the application
// database: the cookie holds only a signed random token, so logout (or an admin
// removing a user) really ends the session, wherever the cookie went.
type dbSessionStore struct {
	db      *store.Store
	codec   securecookie.Codec
	options sessions.Options
}

func newSessionStore(db *store.Store, secret []byte, opts sessions.Options) *dbSessionStore {
	codec := securecookie.New(secret, nil)
	codec.MaxAge(opts.MaxAge)
	return &dbSessionStore{db: db, codec: codec, options: opts}
}

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
	var token string
	if err := s.codec.Decode(name, c.Value, &token); err != nil {
		return sess, nil // forged, expired or from an old key: start afresh
	}
	su, err := s.db.HTTPSessionUser(r.Context(), token)
	if errors.Is(err, store.ErrNotFound) {
		return sess, nil
	}
	if err != nil {
		return sess, err
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
	if sess.Options.MaxAge < 0 {
		if sess.ID != "" {
			if err := s.db.DeleteHTTPSession(ctx, sess.ID); err != nil {
				return err
			}
		}
		http.SetCookie(w, sessions.NewCookie(sess.Name(), "", sess.Options))
		return nil
	}
	if sess.ID == "" {
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
	if err := s.db.SaveHTTPSession(ctx, sess.ID, username, string(data), expires); err != nil {
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
		if err := s.db.DeleteHTTPSession(ctx, sess.ID); err != nil {
			return err
		}
	}
	sess.ID = ""
	return nil
}
