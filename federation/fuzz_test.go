package federation

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// validLogin runs the browser flow up to the IdP's form and returns the
// form plus the pending-request cookies, without consuming it.
func validLogin(tb testing.TB, f *fixture, b idpBehaviour) (samlForm, []*http.Cookie) {
	tb.Helper()
	f.idp.set(b)
	br := newBrowser(tb)
	form := br.startLogin(f)
	return form, br.pendingCookies(f)
}

func acsRequest(f *fixture, samlResponse string, cookies []*http.Cookie) *http.Request {
	body := url.Values{"SAMLResponse": {samlResponse}}.Encode()
	r := httptest.NewRequest(http.MethodPost, f.server.URL+testBasePath+"saml/acs", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

func FuzzConsumeAssertion(f *testing.F) {
	fx := newFixture(f, nil)
	encrypted, c1 := validLogin(f, fx, idpBehaviour{})
	plain, c2 := validLogin(f, fx, idpBehaviour{plaintext: true, signAssertion: true})
	cookies := append(c1, c2...)

	f.Add(encrypted.samlResponse)
	f.Add(plain.samlResponse)
	doc := xmlOf(f, plain.samlResponse)
	removeSignatures(doc)
	f.Add(encode(f, doc))
	f.Add(plain.samlResponse[:len(plain.samlResponse)/2])
	for _, s := range []string{"", "garbage", "%%%", "PD94bWw+", base64.StdEncoding.EncodeToString([]byte(
		`<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"/></samlp:Response>`)),
		base64.StdEncoding.EncodeToString([]byte(`<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>`)),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, samlResponse string) {
		id, _, err := fx.sp.ConsumeAssertion(httptest.NewRecorder(), acsRequest(fx, samlResponse, cookies))
		if err != nil {
			if !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("refusal without ErrInvalidResponse: %v", err)
			}
			return
		}
		if id.EAAHash != testEAAHash {
			t.Fatalf("accepted a forged identity: %+v", id)
		}
	})
}

func BenchmarkConsumeAssertion(b *testing.B) {
	for _, bc := range []struct {
		name string
		b    idpBehaviour
	}{
		{"shibboleth-like encrypted", idpBehaviour{}},
		{"plaintext signed assertion", idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fx := newFixture(b, nil)
			form, cookies := validLogin(b, fx, bc.b)
			pending := fx.sp.tracker.pending(acsRequest(fx, "", cookies), time.Now())
			b.ReportAllocs()
			for b.Loop() {
				fx.sp.replay = newReplayCache(10) // each round is a first use
				if _, _, err := fx.sp.verify(form.samlResponse, pending, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReplayCache(b *testing.B) {
	c := newReplayCache(1 << 20)
	now := time.Now()
	i := 0
	for b.Loop() {
		if err := c.remember(fmt.Sprint(i), now.Add(time.Minute), now); err != nil {
			c = newReplayCache(1 << 20)
		}
		i++
	}
}
