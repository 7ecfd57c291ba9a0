package federation

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
)

func TestLoginFlow(t *testing.T) {
	tests := []struct {
		name      string
		behaviour idpBehaviour
		want      Identity
	}{
		{"shibboleth default: signed response, encrypted unsigned assertion", idpBehaviour{}, Identity{}},
		{"encrypted, response and assertion signed", idpBehaviour{signAssertion: true}, Identity{}},
		{"plaintext, only assertion signed", idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true}, Identity{}},
		{"plaintext, only response signed", idpBehaviour{plaintext: true}, Identity{}},
		{"idp clock 1m ahead, within skew", idpBehaviour{clockShift: time.Minute}, Identity{}},
		{"idp clock 1m behind, within skew", idpBehaviour{clockShift: -time.Minute}, Identity{}},
		{"EAAHash from persistent NameID", idpBehaviour{session: &saml.Session{
			NameID: "persistent-hash-42", NameIDFormat: persistentNameIDFormat, UserName: testUID,
		}}, Identity{EAAHash: "persistent-hash-42", UID: testUID, NameID: "persistent-hash-42", NameIDFormat: persistentNameIDFormat}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.idp.set(tt.behaviour)
			b := newBrowser(t)
			form := b.startLogin(f)
			if form.action != func() string { u := f.sp.ACSURL(); return u.String() }() {
				t.Errorf("form posts to %s", form.action)
			}
			if len(b.pendingCookies(f)) != 1 {
				t.Fatalf("want one pending-request cookie, have %v", b.pendingCookies(f))
			}
			got := b.post(f, form)
			if got.err != nil {
				t.Fatalf("ConsumeAssertion: %v (%s)", got.err, detail(got.err))
			}
			want := tt.want
			if reflect.DeepEqual(want, Identity{}) {
				want = Identity{EAAHash: testEAAHash, UID: testUID, Email: testEmail, Name: testName, NameID: "transient-4711", NameIDFormat: "urn:oasis:names:tc:SAML:2.0:nameid-format:transient", SessionIndex: "idx-1"}
			}
			if !reflect.DeepEqual(got.id, want) {
				t.Errorf("identity = %+v, want %+v", got.id, want)
			}
			if got.relay != testRelay {
				t.Errorf("relay state = %q, want %q", got.relay, testRelay)
			}
			if c := b.pendingCookies(f); len(c) != 0 {
				t.Errorf("pending-request cookie not cleared: %v", c)
			}
		})
	}
}

func detail(err error) string {
	var re *ResponseError
	if errors.As(err, &re) {
		return re.Detail
	}
	return ""
}

// Tamperings of a valid response document.
func removeSignatures(doc *etree.Document) {
	walk(doc.Root(), func(el *etree.Element) {
		for _, c := range el.ChildElements() {
			if c.Tag == "Signature" {
				el.RemoveChild(c)
			}
		}
	})
}

func assertionOf(doc *etree.Document) *etree.Element {
	return doc.Root().SelectElement("Assertion")
}

// evilCopy is the signed assertion with the attacker's hash and its
// signature removed.
func evilCopy(signed *etree.Element) *etree.Element {
	evil := signed.Copy()
	evil.CreateAttr("ID", "id-evil")
	for _, c := range evil.ChildElements() {
		if c.Tag == "Signature" {
			evil.RemoveChild(c)
		}
	}
	walk(evil, func(el *etree.Element) {
		if el.Tag == "NameID" && el.Text() == testEAAHash {
			el.SetText("attacker-hash")
		}
	})
	return evil
}

func TestRefusals(t *testing.T) {
	evilAudience := func(a *saml.Assertion) {
		a.Conditions.AudienceRestrictions[0].Audience.Value = "https://other.example/shibboleth"
	}
	tests := []struct {
		name      string
		config    func(*Config)
		behaviour idpBehaviour
		tamper    func(t *testing.T, doc *etree.Document)
		lostState bool // the browser lost its pending-request cookie
		want      error
	}{
		{name: "neither response nor assertion signed", behaviour: idpBehaviour{unsignedResp: true}, want: ErrUnsigned},
		{name: "signatures removed", behaviour: idpBehaviour{plaintext: true, signAssertion: true},
			tamper: func(t *testing.T, doc *etree.Document) { removeSignatures(doc) }, want: ErrUnsigned},
		{name: "signed by a key not in the IdP metadata", behaviour: idpBehaviour{signer: &bad, signAssertion: true}, want: ErrSignature},
		{name: "attribute changed after signing", behaviour: idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				walk(assertionOf(doc), func(el *etree.Element) {
					if el.Tag == "NameID" && el.Text() == testEAAHash {
						el.SetText("attacker-hash")
					}
				})
			}, want: ErrSignature},
		{name: "response changed after signing", behaviour: idpBehaviour{plaintext: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				assertionOf(doc).CreateAttr("ID", "id-changed")
			}, want: ErrSignature},
		{name: "wrong audience", behaviour: idpBehaviour{mutateAssertion: evilAudience}, want: ErrAudience},
		{name: "no audience restriction", behaviour: idpBehaviour{mutateAssertion: func(a *saml.Assertion) {
			a.Conditions.AudienceRestrictions = nil
		}}, want: ErrAudience},
		{name: "wrong recipient", behaviour: idpBehaviour{mutateAssertion: func(a *saml.Assertion) {
			a.Subject.SubjectConfirmations[0].SubjectConfirmationData.Recipient = "https://other.example/acs"
		}}, want: ErrRecipient},
		{name: "wrong destination", behaviour: idpBehaviour{mutateResponse: func(r *saml.Response) {
			r.Destination = "https://other.example/acs"
		}}, want: ErrDestination},
		{name: "no destination", behaviour: idpBehaviour{mutateResponse: func(r *saml.Response) { r.Destination = "" }}, want: ErrDestination},
		{name: "expired: idp clock 10m behind", behaviour: idpBehaviour{clockShift: -10 * time.Minute}, want: ErrExpired},
		{name: "not yet valid: idp clock 10m ahead", behaviour: idpBehaviour{clockShift: 10 * time.Minute}, want: ErrNotYetValid},
		{name: "conditions ended beyond skew", behaviour: idpBehaviour{mutateAssertion: func(a *saml.Assertion) {
			a.Conditions.NotOnOrAfter = time.Now().Add(-3 * time.Minute)
		}}, want: ErrExpired},
		{name: "conditions start beyond skew", behaviour: idpBehaviour{mutateAssertion: func(a *saml.Assertion) {
			a.Conditions.NotBefore = time.Now().Add(3 * time.Minute)
		}}, want: ErrNotYetValid},
		{name: "tighter configured skew", config: func(c *Config) { c.ClockSkew = 20 * time.Second },
			behaviour: idpBehaviour{clockShift: time.Minute}, want: ErrNotYetValid},
		{name: "answer to another request", behaviour: idpBehaviour{
			mutateResponse: func(r *saml.Response) { r.InResponseTo = "id-someone-else" },
			mutateAssertion: func(a *saml.Assertion) {
				a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = "id-someone-else"
			},
		}, want: ErrInResponseTo},
		{name: "assertion answers another request than its response", behaviour: idpBehaviour{
			mutateAssertion: func(a *saml.Assertion) {
				a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = "id-someone-else"
			},
		}, want: ErrInResponseTo},
		{name: "browser has no pending request", lostState: true, want: ErrInResponseTo},
		{name: "idp-initiated not allowed", behaviour: idpBehaviour{
			mutateResponse:  func(r *saml.Response) { r.InResponseTo = "" },
			mutateAssertion: func(a *saml.Assertion) { a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = "" },
		}, want: ErrInResponseTo},
		{name: "idp-initiated allowed but InResponseTo unknown", config: func(c *Config) { c.AllowIdPInitiated = true }, behaviour: idpBehaviour{
			mutateResponse: func(r *saml.Response) { r.InResponseTo = "id-someone-else" },
			mutateAssertion: func(a *saml.Assertion) {
				a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = "id-someone-else"
			},
		}, want: ErrInResponseTo},
		{name: "wrong issuer", behaviour: idpBehaviour{mutateAssertion: func(a *saml.Assertion) {
			a.Issuer.Value = "https://evil.example/idp"
		}}, want: ErrIssuer},
		{name: "idp reports failure", behaviour: idpBehaviour{mutateResponse: func(r *saml.Response) {
			r.Status = saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusResponder},
				StatusMessage: &saml.StatusMessage{Value: "internal IdP secret text"}}
		}}, want: ErrIdPStatus},
		{name: "no EAAHash released", behaviour: idpBehaviour{session: &saml.Session{NameID: "t-1", UserName: testUID}}, want: ErrMissingAttribute},
		{name: "markup in the hash", behaviour: idpBehaviour{session: &saml.Session{NameID: "t-1", UserName: testUID,
			CustomAttributes: []saml.Attribute{{Name: "EAAHash", Values: []saml.AttributeValue{{Value: `h"><img src=x onerror=alert(1)>`}}}}}},
			want: ErrMarkupInHash},
		{name: "wrapping: unsigned evil assertion before the signed one",
			behaviour: idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				signed := assertionOf(doc)
				doc.Root().InsertChildAt(signed.Index(), evilCopy(signed))
			}, want: ErrWrapping},
		{name: "wrapping: signed assertion moved inside the evil one",
			behaviour: idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				signed := assertionOf(doc)
				evil := evilCopy(signed)
				doc.Root().RemoveChild(signed)
				evil.CreateElement("saml:Advice").AddChild(signed)
				doc.Root().AddChild(evil)
			}, want: ErrWrapping},
		{name: "wrapping: signed assertion moved to Extensions, evil one in its place",
			behaviour: idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				signed := assertionOf(doc)
				evil := evilCopy(signed)
				idx := signed.Index()
				doc.Root().RemoveChild(signed)
				doc.Root().InsertChildAt(idx, evil)
				doc.Root().CreateElement("samlp:Extensions").AddChild(signed)
			}, want: ErrWrapping},
		{name: "wrapping: evil assertion carrying the original signature, original in its Object",
			behaviour: idpBehaviour{plaintext: true, signAssertion: true, unsignedResp: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				signed := assertionOf(doc)
				evil := evilCopy(signed)
				evil.CreateAttr("ID", signed.SelectAttrValue("ID", ""))
				sig := signed.SelectElement("Signature").Copy()
				sig.CreateElement("ds:Object").AddChild(signed.Copy())
				evil.AddChild(sig)
				doc.Root().RemoveChild(signed)
				doc.Root().AddChild(evil)
			}, want: ErrWrapping},
		{name: "wrapping: signed response with a second, unsigned assertion appended",
			behaviour: idpBehaviour{plaintext: true},
			tamper: func(t *testing.T, doc *etree.Document) {
				doc.Root().AddChild(evilCopy(assertionOf(doc)))
			}, want: ErrWrapping},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.config)
			f.idp.set(tt.behaviour)
			b := newBrowser(t)
			form := b.startLogin(f)
			if tt.tamper != nil {
				doc := xmlOf(t, form.samlResponse)
				tt.tamper(t, doc)
				form.samlResponse = encode(t, doc)
			}
			if tt.lostState {
				fresh := newBrowser(t)
				b = fresh
			}
			got := b.post(f, form)
			if got.err == nil {
				t.Fatalf("accepted: %+v", got.id)
			}
			if !errors.Is(got.err, ErrInvalidResponse) || !errors.Is(got.err, tt.want) {
				t.Fatalf("error = %v (%s), want %v", got.err, detail(got.err), tt.want)
			}
			if !reflect.DeepEqual(got.id, Identity{}) {
				t.Errorf("identity leaked on refusal: %+v", got.id)
			}
			if strings.Contains(got.err.Error(), "secret") {
				t.Errorf("IdP text in user-facing error: %q", got.err)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	t.Run("same post twice", func(t *testing.T) {
		f := newFixture(t, nil)
		b := newBrowser(t)
		form := b.startLogin(f)
		pending := b.pendingCookies(f) // an attacker holding the victim's cookie too
		if got := b.post(f, form); got.err != nil {
			t.Fatalf("first post: %v (%s)", got.err, detail(got.err))
		}
		acs := f.sp.ACSURL()
		b.client.Jar.SetCookies(&acs, pending)
		got := b.post(f, form)
		if !errors.Is(got.err, ErrReplay) {
			t.Fatalf("second post: %v (%s), want ErrReplay", got.err, detail(got.err))
		}
	})
	t.Run("idp-initiated allowed, replayed", func(t *testing.T) {
		f := newFixture(t, func(c *Config) { c.AllowIdPInitiated = true })
		f.idp.set(idpBehaviour{
			mutateResponse:  func(r *saml.Response) { r.InResponseTo = "" },
			mutateAssertion: func(a *saml.Assertion) { a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = "" },
		})
		form := newBrowser(t).startLogin(f)
		first := newBrowser(t).post(f, form)
		if first.err != nil || first.id.EAAHash != testEAAHash || first.relay != "" {
			t.Fatalf("unsolicited login: %+v (%s)", first, detail(first.err))
		}
		if got := newBrowser(t).post(f, form); !errors.Is(got.err, ErrReplay) {
			t.Fatalf("replay: %v, want ErrReplay", got.err)
		}
	})
}

// TestUniqueIDIsAHash: an IdP that releases eduPersonUniqueId but no
// eduPersonTargetedID is understood with the default attribute names.
func TestUniqueIDIsAHash(t *testing.T) {
	f := newFixture(t, nil)
	f.idp.set(idpBehaviour{session: &saml.Session{NameID: "t-1", UserName: testUID, CustomAttributes: []saml.Attribute{{
		FriendlyName: "eduPersonUniqueId", Name: AttrEduPersonUniqueID, NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
		Values: []saml.AttributeValue{{Value: "jdoe42@facility.example"}},
	}}}})
	b := newBrowser(t)
	got := b.post(f, b.startLogin(f))
	if got.err != nil || got.id.EAAHash != "jdoe42@facility.example" {
		t.Fatalf("identity = %+v, %v (%s); want the unique id as the hash", got.id, got.err, detail(got.err))
	}
}
