package federation

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
	xrv "github.com/mattermost/xml-roundtrip-validator"
)

const (
	nsProtocol  = "urn:oasis:names:tc:SAML:2.0:protocol"
	nsAssertion = "urn:oasis:names:tc:SAML:2.0:assertion"
	nsDSig      = "http://www.w3.org/2000/09/xmldsig#"
	bearer      = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
	// maxResponseBytes bounds the decoded response; real ones are < 20 KiB.
	maxResponseBytes = 256 << 10
	maxFormBytes     = 2 * maxResponseBytes
)

// ConsumeAssertion handles the IdP's HTTP-POST to the ACS. It returns the
// asserted identity and the relayState given to StartLogin (empty for an
// allowed IdP-initiated login), and clears the pending-request cookie.
// Every refusal is a *ResponseError (errors.Is ErrInvalidResponse and its
// reason); show users a generic message, log the error with slog.
//
// crewjam/saml verifies the XML signatures and its own conditions; on top
// of it this refuses: documents with more than one assertion anywhere
// (signature wrapping), unsigned responses whose assertion is unsigned too,
// a missing or wrong Destination, Recipient or Audience, time limits beyond
// ClockSkew, unknown InResponseTo, and replayed assertion IDs.
func (sp *ServiceProvider) ConsumeAssertion(w http.ResponseWriter, r *http.Request) (Identity, string, error) {
	if r.Method != http.MethodPost {
		return Identity{}, "", refuse(ErrMalformed, "method "+r.Method)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return Identity{}, "", refuse(ErrMalformed, "parse form: "+err.Error())
	}
	now := sp.now()
	pending := sp.tracker.pending(r, now)
	id, inResponseTo, err := sp.verify(r.PostForm.Get("SAMLResponse"), pending, now)
	if err != nil {
		return Identity{}, "", err
	}
	var relayState string
	for _, p := range pending {
		if p.ID == inResponseTo && inResponseTo != "" {
			relayState = p.RelayState
			sp.tracker.forget(w, p.ID)
		}
	}
	return id, relayState, nil
}

// verify checks an encoded SAMLResponse and returns the identity and the
// request ID it answers.
func (sp *ServiceProvider) verify(encoded string, pending []pendingLogin, now time.Time) (Identity, string, error) {
	s := sp.current.Load()
	raw, err := decodeResponse(encoded)
	if err != nil {
		return Identity{}, "", err
	}
	if err := xrv.Validate(bytes.NewReader(raw)); err != nil {
		return Identity{}, "", refuse(ErrMalformed, "xml round trip: "+err.Error())
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		return Identity{}, "", refuse(ErrMalformed, "parse xml: "+err.Error())
	}
	root := doc.Root()
	if root == nil || root.Tag != "Response" || root.NamespaceURI() != nsProtocol {
		return Identity{}, "", refuse(ErrMalformed, "root element is not a SAML Response")
	}
	var resp saml.Response
	if err := xml.Unmarshal(raw, &resp); err != nil {
		return Identity{}, "", refuse(ErrMalformed, "unmarshal response: "+err.Error())
	}
	pendingIDs := make([]string, 0, len(pending))
	for _, p := range pending {
		pendingIDs = append(pendingIDs, p.ID)
	}

	// Cheap checks on the envelope first: they name the reason precisely.
	if err := sp.checkEnvelope(&resp, s.IDPMetadata.EntityID, pendingIDs); err != nil {
		return Identity{}, "", err
	}
	assertionEl, encrypted, err := sp.singleAssertion(root)
	if err != nil {
		return Identity{}, "", err
	}
	if !hasSignature(root) && !hasSignature(assertionEl) {
		return Identity{}, "", refuse(ErrUnsigned, "")
	}
	unverified := resp.Assertion
	if encrypted {
		if unverified, err = unmarshalAssertion(assertionEl); err != nil {
			return Identity{}, "", err
		}
	}
	if err := sp.checkAssertion(unverified, resp.InResponseTo, s.IDPMetadata.EntityID, pendingIDs, now); err != nil {
		return Identity{}, "", err
	}

	// The authoritative verification: signatures (and crewjam's own checks).
	verified, err := parseWithCrewjam(s, raw, pendingIDs, sp.acsURL)
	if err != nil {
		return Identity{}, "", err
	}
	// Re-check what was actually verified, not the copy parsed above.
	if err := sp.checkAssertion(verified, resp.InResponseTo, s.IDPMetadata.EntityID, pendingIDs, now); err != nil {
		return Identity{}, "", err
	}
	if err := sp.replay.remember(verified.Issuer.Value+"\x00"+verified.ID, sp.acceptableUntil(verified), now); err != nil {
		return Identity{}, "", refuse(err, "assertion "+verified.ID)
	}
	id, err := sp.cfg.Attributes.identity(verified)
	if err != nil {
		return Identity{}, "", err
	}
	return id, inResponseTo(verified, resp.InResponseTo), nil
}

func decodeResponse(encoded string) ([]byte, error) {
	if encoded == "" {
		return nil, refuse(ErrMalformed, "no SAMLResponse")
	}
	if base64.StdEncoding.DecodedLen(len(encoded)) > maxResponseBytes+3 {
		return nil, refuse(ErrMalformed, "SAMLResponse too large")
	}
	// Some IdPs wrap the base64 text.
	encoded = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, encoded)
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, refuse(ErrMalformed, "base64: "+err.Error())
	}
	return raw, nil
}

func (sp *ServiceProvider) checkEnvelope(resp *saml.Response, idpEntityID string, pendingIDs []string) error {
	if code := resp.Status.StatusCode.Value; code != saml.StatusSuccess {
		detail := "status " + code
		if sub := resp.Status.StatusCode.StatusCode; sub != nil {
			detail += " / " + sub.Value
		}
		if msg := resp.Status.StatusMessage; msg != nil {
			detail += ": " + msg.Value
		}
		return refuse(ErrIdPStatus, detail)
	}
	if resp.Issuer != nil && resp.Issuer.Value != idpEntityID {
		return refuse(ErrIssuer, fmt.Sprintf("response issuer %q", resp.Issuer.Value))
	}
	// Shibboleth always sets Destination; require it rather than trust its absence.
	if resp.Destination != sp.acsURL.String() {
		return refuse(ErrDestination, fmt.Sprintf("destination %q, want %q", resp.Destination, sp.acsURL.String()))
	}
	return sp.checkInResponseTo(resp.InResponseTo, pendingIDs)
}

func (sp *ServiceProvider) checkInResponseTo(id string, pendingIDs []string) error {
	switch {
	case id == "" && sp.cfg.AllowIdPInitiated:
		return nil
	case id == "":
		return refuse(ErrInResponseTo, "unsolicited response (IdP-initiated login not allowed)")
	case !slices.Contains(pendingIDs, id):
		return refuse(ErrInResponseTo, fmt.Sprintf("InResponseTo %q not pending in this browser", id))
	}
	return nil
}

// singleAssertion refuses any document with other than exactly one
// (Encrypted)Assertion, a direct child of the Response: the classic
// signature-wrapping attacks hide a signed assertion next to or inside an
// unsigned one. Encrypted assertions are decrypted and checked likewise.
func (sp *ServiceProvider) singleAssertion(root *etree.Element) (el *etree.Element, encrypted bool, err error) {
	var found []*etree.Element
	walk(root, func(el *etree.Element) {
		if el.Tag == "Assertion" || el.Tag == "EncryptedAssertion" {
			found = append(found, el)
		}
	})
	if len(found) != 1 || found[0].Parent() != root || found[0].NamespaceURI() != nsAssertion {
		return nil, false, refuse(ErrWrapping, fmt.Sprintf("%d assertion elements", len(found)))
	}
	if countSignatures(root) > 1 || countSignatures(found[0]) > 1 {
		return nil, false, refuse(ErrWrapping, "more than one Signature on one element")
	}
	if found[0].Tag == "Assertion" {
		return found[0], false, nil
	}
	plain, err := sp.decrypt(found[0])
	if err != nil {
		return nil, true, err
	}
	nested := 0
	walk(plain, func(el *etree.Element) {
		if el != plain && (el.Tag == "Assertion" || el.Tag == "EncryptedAssertion") {
			nested++
		}
	})
	if plain.Tag != "Assertion" || plain.NamespaceURI() != nsAssertion || nested > 0 || countSignatures(plain) > 1 {
		return nil, true, refuse(ErrWrapping, "encrypted content is not a single assertion")
	}
	return plain, true, nil
}

func walk(el *etree.Element, visit func(*etree.Element)) {
	visit(el)
	for _, c := range el.ChildElements() {
		walk(c, visit)
	}
}

func countSignatures(el *etree.Element) int {
	n := 0
	for _, c := range el.ChildElements() {
		if c.Tag == "Signature" {
			n++
		}
	}
	return n
}

func hasSignature(el *etree.Element) bool {
	for _, c := range el.ChildElements() {
		if c.Tag == "Signature" && c.NamespaceURI() == nsDSig {
			return true
		}
	}
	return false
}

// decrypt mirrors crewjam's decryption so the checks above can look inside.
func (sp *ServiceProvider) decrypt(encrypted *etree.Element) (*etree.Element, error) {
	data := encrypted.FindElement("./EncryptedData")
	if data == nil {
		return nil, refuse(ErrMalformed, "EncryptedAssertion without EncryptedData")
	}
	var key any = sp.key
	if keyEl := encrypted.FindElement("./EncryptedKey"); keyEl != nil {
		k, err := xmlenc.Decrypt(sp.key, keyEl)
		if err != nil {
			return nil, refuse(ErrMalformed, "decrypt key: "+err.Error())
		}
		key = k
	}
	plain, err := xmlenc.Decrypt(key, data)
	if err != nil {
		return nil, refuse(ErrMalformed, "decrypt assertion: "+err.Error())
	}
	if err := xrv.Validate(bytes.NewReader(plain)); err != nil {
		return nil, refuse(ErrMalformed, "decrypted xml round trip: "+err.Error())
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(plain); err != nil || doc.Root() == nil {
		return nil, refuse(ErrMalformed, "decrypted assertion is not xml")
	}
	return doc.Root(), nil
}

// unmarshalAssertion gives the struct form of a decrypted assertion.
func unmarshalAssertion(el *etree.Element) (*saml.Assertion, error) {
	doc := etree.NewDocument()
	doc.SetRoot(el.Copy())
	buf, err := doc.WriteToBytes()
	if err != nil {
		return nil, refuse(ErrMalformed, "serialize assertion: "+err.Error())
	}
	var a saml.Assertion
	if err := xml.Unmarshal(buf, &a); err != nil {
		return nil, refuse(ErrMalformed, "unmarshal assertion: "+err.Error())
	}
	return &a, nil
}

// parseWithCrewjam runs the library's verification. Our checks ran first,
// so what it refuses is the signature (or its own stricter limits).
func parseWithCrewjam(s *saml.ServiceProvider, raw []byte, pendingIDs []string, acs url.URL) (a *saml.Assertion, err error) {
	defer func() {
		// Last line of defence against a library panic on hostile input.
		if p := recover(); p != nil {
			a, err = nil, refuse(ErrMalformed, fmt.Sprintf("saml library panic: %v", p))
		}
	}()
	a, err = s.ParseXMLResponse(raw, pendingIDs, acs)
	if err != nil {
		detail := err.Error()
		var ire *saml.InvalidResponseError
		if errors.As(err, &ire) && ire.PrivateErr != nil {
			detail = ire.PrivateErr.Error()
		}
		return nil, refuse(ErrSignature, detail)
	}
	return a, nil
}

// checkAssertion applies this package's rules to an assertion.
func (sp *ServiceProvider) checkAssertion(a *saml.Assertion, respInResponseTo, idpEntityID string, pendingIDs []string, now time.Time) error {
	skew := sp.cfg.ClockSkew
	if a.Issuer.Value != idpEntityID {
		return refuse(ErrIssuer, fmt.Sprintf("assertion issuer %q", a.Issuer.Value))
	}
	if a.IssueInstant.After(now.Add(skew)) {
		return refuse(ErrNotYetValid, "issued at "+a.IssueInstant.Format(time.RFC3339))
	}
	// crewjam refuses assertions issued more than saml.MaxIssueDelay ago.
	if a.IssueInstant.Add(saml.MaxIssueDelay).Before(now) {
		return refuse(ErrExpired, "issued at "+a.IssueInstant.Format(time.RFC3339))
	}
	if a.Subject == nil {
		return refuse(ErrMalformed, "assertion without Subject")
	}
	bearers := 0
	for _, sc := range a.Subject.SubjectConfirmations {
		d := sc.SubjectConfirmationData
		if d == nil {
			return refuse(ErrMalformed, "subject confirmation without data")
		}
		if sc.Method == bearer {
			bearers++
		}
		if d.Recipient != sp.acsURL.String() {
			return refuse(ErrRecipient, fmt.Sprintf("recipient %q, want %q", d.Recipient, sp.acsURL.String()))
		}
		if d.NotOnOrAfter.IsZero() || !now.Before(d.NotOnOrAfter.Add(skew)) {
			return refuse(ErrExpired, "subject confirmation not on or after "+d.NotOnOrAfter.Format(time.RFC3339))
		}
		if respInResponseTo != "" && d.InResponseTo != respInResponseTo {
			return refuse(ErrInResponseTo, "assertion and response answer different requests")
		}
		if err := sp.checkInResponseTo(d.InResponseTo, pendingIDs); err != nil {
			return err
		}
	}
	if bearers == 0 {
		return refuse(ErrMalformed, "no bearer subject confirmation")
	}
	c := a.Conditions
	if c == nil {
		return refuse(ErrMalformed, "assertion without Conditions")
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(skew)) {
		return refuse(ErrNotYetValid, "not before "+c.NotBefore.Format(time.RFC3339))
	}
	if c.NotOnOrAfter.IsZero() || !now.Before(c.NotOnOrAfter.Add(skew)) {
		return refuse(ErrExpired, "not on or after "+c.NotOnOrAfter.Format(time.RFC3339))
	}
	return sp.checkAudience(a)
}

// checkAudience requires at least one AudienceRestriction and every one of
// them to name this SP (crewjam accepts assertions with none).
func (sp *ServiceProvider) checkAudience(a *saml.Assertion) error {
	if a.Conditions == nil || len(a.Conditions.AudienceRestrictions) == 0 {
		return refuse(ErrAudience, "no audience restriction")
	}
	for _, ar := range a.Conditions.AudienceRestrictions {
		if ar.Audience.Value != sp.entityID {
			return refuse(ErrAudience, fmt.Sprintf("audience %q, want %q", ar.Audience.Value, sp.entityID))
		}
	}
	return nil
}

// acceptableUntil is the last moment the assertion could pass checkAssertion,
// hence how long its ID must be remembered.
func (sp *ServiceProvider) acceptableUntil(a *saml.Assertion) time.Time {
	until := a.Conditions.NotOnOrAfter
	for _, sc := range a.Subject.SubjectConfirmations {
		if d := sc.SubjectConfirmationData; d != nil && d.NotOnOrAfter.Before(until) {
			until = d.NotOnOrAfter
		}
	}
	return until.Add(sp.cfg.ClockSkew)
}

func inResponseTo(a *saml.Assertion, respInResponseTo string) string {
	if respInResponseTo != "" {
		return respInResponseTo
	}
	for _, sc := range a.Subject.SubjectConfirmations {
		if d := sc.SubjectConfirmationData; d != nil && d.InResponseTo != "" {
			return d.InResponseTo
		}
	}
	return ""
}

// identity maps the verified assertion's attributes to an Identity.
func (n AttributeNames) identity(a *saml.Assertion) (Identity, error) {
	id := Identity{
		EAAHash: attribute(a, n.EAAHash),
		UID:     attribute(a, n.UID),
		Email:   attribute(a, n.Email),
		Name:    attribute(a, n.Name),
		Values:  attributeValues(a, n.Values),
	}
	for _, st := range a.AuthnStatements {
		if st.SessionIndex != "" {
			id.SessionIndex = st.SessionIndex
			break
		}
	}
	if nid := a.Subject.NameID; nid != nil {
		id.NameID, id.NameIDFormat = nid.Value, nid.Format
		if id.EAAHash == "" && n.EAAHashFromPersistentNameID && nid.Format == persistentNameIDFormat {
			id.EAAHash = strings.TrimSpace(nid.Value)
		}
	}
	if id.EAAHash == "" {
		return Identity{}, refuse(ErrMissingAttribute, "no EAAHash among "+strings.Join(n.EAAHash, ", "))
	}
	if err := CheckHash(id.EAAHash); err != nil {
		return Identity{}, refuse(ErrMarkupInHash, err.Error())
	}
	return id, nil
}

// attribute returns the first non-empty value of the first listed name
// present; a NameID-valued attribute (eduPersonTargetedID) yields its value.
func attribute(a *saml.Assertion, names []string) string {
	for _, name := range names {
		for _, st := range a.AttributeStatements {
			for _, attr := range st.Attributes {
				if attr.Name != name && attr.FriendlyName != name {
					continue
				}
				for _, v := range attr.Values {
					val := v.Value
					if v.NameID != nil {
						val = v.NameID.Value
					}
					if val = strings.TrimSpace(val); val != "" {
						return val
					}
				}
			}
		}
	}
	return ""
}

// attributeValues returns every non-empty value of the listed attributes, sorted
// and without repeats.
func attributeValues(a *saml.Assertion, names []string) []string {
	var out []string
	for _, st := range a.AttributeStatements {
		for _, attr := range st.Attributes {
			if !slices.Contains(names, attr.Name) && !slices.Contains(names, attr.FriendlyName) {
				continue
			}
			for _, v := range attr.Values {
				if val := strings.TrimSpace(v.Value); val != "" {
					out = append(out, val)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
