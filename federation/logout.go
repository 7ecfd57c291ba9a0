package federation

import (
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	xrv "github.com/mattermost/xml-roundtrip-validator"
	dsig "github.com/russellhaering/goxmldsig"
)

// Single logout (SAML 2.0 SLO). This SP sends its LogoutRequests and LogoutResponses
// with the HTTP-Redirect binding, signed over the query string as the binding says
// (crewjam/saml signs the XML instead, which identity providers ignore or refuse),
// and takes the IdP's messages by HTTP-Redirect or HTTP-POST, signed either way.

const (
	logoutCookiePrefix = "calipso_slo_"
	// logoutTimeout is how long the IdP may take to answer a LogoutRequest.
	logoutTimeout = 10 * time.Minute
	// maxMessageBytes bounds an inflated logout message.
	maxMessageBytes = 256 << 10
	// maxMessageAge is how old (by IssueInstant) a logout message may be, beyond the
	// clock skew.
	maxMessageAge = 5 * time.Minute
)

// SLOURL is the single logout endpoint, where the IdP sends LogoutRequests and
// LogoutResponses (route it to a handler calling ConsumeLogout).
func (sp *ServiceProvider) SLOURL() url.URL { return sp.sloURL }

// Session names a login at the IdP, as its assertion did: single logout ends it.
type Session struct {
	NameID, NameIDFormat, SessionIndex string
}

// StartLogout answers a 302 to the IdP's single logout service with a signed
// LogoutRequest for s. relayState comes back from ConsumeLogout with the IdP's
// answer, never one the IdP makes up. ErrNoSingleLogout when the IdP has no
// HTTP-Redirect single logout service (the caller then ends only its own session).
func (sp *ServiceProvider) StartLogout(w http.ResponseWriter, r *http.Request, s Session, relayState string) error {
	if len(relayState) > maxRelayStateBytes {
		return fmt.Errorf("start logout: relay state longer than %d bytes", maxRelayStateBytes)
	}
	cur := sp.current.Load()
	dest := cur.GetSLOBindingLocation(saml.HTTPRedirectBinding)
	if dest == "" {
		return ErrNoSingleLogout
	}
	unsigned := *cur
	unsigned.SignatureMethod = "" // the query string is signed, not the XML
	req, err := unsigned.MakeLogoutRequest(dest, s.NameID)
	if err != nil {
		return fmt.Errorf("start logout: %w", err)
	}
	req.NameID = &saml.NameID{Value: s.NameID, Format: s.NameIDFormat}
	if s.SessionIndex != "" {
		req.SessionIndex = &saml.SessionIndex{Value: s.SessionIndex}
	}
	target, err := redirectBinding(cur, dest, "SAMLRequest", req.Element(), "")
	if err != nil {
		return fmt.Errorf("start logout: %w", err)
	}
	now := sp.now()
	if err := sp.logouts.track(w, r, pendingLogin{ID: req.ID, RelayState: relayState, Expires: now.Add(logoutTimeout).Unix()}, now); err != nil {
		return fmt.Errorf("start logout: remember request: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// LogoutMessage is a verified message of the IdP at the SLO URL.
type LogoutMessage struct {
	// Request is true for a LogoutRequest: the IdP (on its own, or for another SP)
	// asks to end the sessions of NameID (those of SessionIndex, when given); answer
	// it with RespondLogout. Otherwise it is the LogoutResponse to StartLogout.
	Request      bool
	ID           string // the request's ID, which RespondLogout answers
	NameID       string
	SessionIndex string
	// RelayState: for a response, StartLogout's; for a request, the IdP's, to give
	// back to it in RespondLogout.
	RelayState string
	// Status is the response's status code (saml.StatusSuccess when the IdP ended
	// every session; a partial logout otherwise).
	Status string
}

// ConsumeLogout verifies the IdP's LogoutRequest or LogoutResponse: its signature
// (over the query string, or in the XML for HTTP-POST), issuer, destination and age;
// a request's ID is not accepted twice, a response must answer a logout this browser
// started. Errors are ResponseErrors.
func (sp *ServiceProvider) ConsumeLogout(w http.ResponseWriter, r *http.Request) (LogoutMessage, error) {
	cur := sp.current.Load()
	raw, relay, err := sp.logoutMessage(r, cur)
	if err != nil {
		return LogoutMessage{}, err
	}
	now := sp.now()
	var head struct {
		XMLName      xml.Name
		ID           string    `xml:",attr"`
		InResponseTo string    `xml:",attr"`
		IssueInstant time.Time `xml:",attr"`
		Destination  string    `xml:",attr"`
		Issuer       string    `xml:"urn:oasis:names:tc:SAML:2.0:assertion Issuer"`
		NameID       string    `xml:"urn:oasis:names:tc:SAML:2.0:assertion NameID"`
		SessionIndex string    `xml:"urn:oasis:names:tc:SAML:2.0:protocol SessionIndex"`
		Status       struct {
			Code struct {
				Value string `xml:",attr"`
			} `xml:"urn:oasis:names:tc:SAML:2.0:protocol StatusCode"`
		} `xml:"urn:oasis:names:tc:SAML:2.0:protocol Status"`
	}
	if err := xml.Unmarshal(raw, &head); err != nil {
		return LogoutMessage{}, refuse(ErrMalformed, "logout message: "+err.Error())
	}
	const protocol = "urn:oasis:names:tc:SAML:2.0:protocol"
	msg := LogoutMessage{ID: head.ID, NameID: strings.TrimSpace(head.NameID), SessionIndex: strings.TrimSpace(head.SessionIndex)}
	switch head.XMLName {
	case xml.Name{Space: protocol, Local: "LogoutRequest"}:
		msg.Request = true
	case xml.Name{Space: protocol, Local: "LogoutResponse"}:
	default:
		return LogoutMessage{}, refuse(ErrMalformed, "not a logout message: "+head.XMLName.Local)
	}
	if strings.TrimSpace(head.Issuer) != cur.IDPMetadata.EntityID {
		return LogoutMessage{}, refuse(ErrIssuer, "logout message issuer "+head.Issuer)
	}
	if head.Destination != "" && head.Destination != sp.sloURL.String() {
		return LogoutMessage{}, refuse(ErrDestination, "logout message destination "+head.Destination)
	}
	skew := sp.cfg.ClockSkew
	if head.IssueInstant.After(now.Add(skew)) {
		return LogoutMessage{}, refuse(ErrNotYetValid, "logout message issued at "+head.IssueInstant.String())
	}
	if head.IssueInstant.Before(now.Add(-skew - maxMessageAge)) {
		return LogoutMessage{}, refuse(ErrExpired, "logout message issued at "+head.IssueInstant.String())
	}
	if msg.Request {
		if head.ID == "" || msg.NameID == "" {
			return LogoutMessage{}, refuse(ErrMalformed, "logout request without ID or NameID")
		}
		if err := sp.replay.remember("slo:"+head.ID, now.Add(skew+maxMessageAge), now); errors.Is(err, ErrReplay) {
			return LogoutMessage{}, refuse(ErrReplay, "logout request "+head.ID)
		} else if err != nil {
			return LogoutMessage{}, err
		}
		msg.RelayState = relay
		return msg, nil
	}
	msg.Status = head.Status.Code.Value
	for _, p := range sp.logouts.pending(r, now) {
		if p.ID == head.InResponseTo {
			sp.logouts.forget(w, p.ID)
			msg.RelayState = p.RelayState
			return msg, nil
		}
	}
	return LogoutMessage{}, refuse(ErrNoPendingLogout, "in response to "+head.InResponseTo)
}

// RespondLogout answers the IdP's LogoutRequest requestID, once its sessions have
// ended: a 302 to the IdP with a signed LogoutResponse (success) and relayState.
func (sp *ServiceProvider) RespondLogout(w http.ResponseWriter, r *http.Request, requestID, relayState string) error {
	cur := sp.current.Load()
	dest := ""
	for _, d := range cur.IDPMetadata.IDPSSODescriptors {
		for _, e := range d.SingleLogoutServices {
			if e.Binding == saml.HTTPRedirectBinding && dest == "" {
				dest = e.Location
				if e.ResponseLocation != "" {
					dest = e.ResponseLocation
				}
			}
		}
	}
	if dest == "" {
		return ErrNoSingleLogout
	}
	unsigned := *cur
	unsigned.SignatureMethod = ""
	resp, err := unsigned.MakeLogoutResponse(dest, requestID)
	if err != nil {
		return fmt.Errorf("logout response: %w", err)
	}
	target, err := redirectBinding(cur, dest, "SAMLResponse", resp.Element(), relayState)
	if err != nil {
		return fmt.Errorf("logout response: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// redirectBinding is dest with the message el, deflated and signed over the query
// string (SAML 2.0 bindings, 3.4.4.1), under param (SAMLRequest or SAMLResponse).
func redirectBinding(s *saml.ServiceProvider, dest, param string, el *etree.Element, relayState string) (string, error) {
	doc := etree.NewDocument()
	doc.SetRoot(el)
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := doc.WriteTo(fw); err != nil {
		return "", err
	}
	if err := fw.Close(); err != nil {
		return "", err
	}
	q := param + "=" + url.QueryEscape(base64.StdEncoding.EncodeToString(buf.Bytes()))
	if relayState != "" {
		q += "&RelayState=" + url.QueryEscape(relayState)
	}
	q += "&SigAlg=" + url.QueryEscape(dsig.RSASHA256SignatureMethod)
	signer, err := saml.GetSigningContext(s)
	if err != nil {
		return "", err
	}
	sig, err := signer.SignString(q)
	if err != nil {
		return "", err
	}
	q += "&Signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
	u, err := url.Parse(dest)
	if err != nil {
		return "", err
	}
	if u.RawQuery != "" {
		q = u.RawQuery + "&" + q
	}
	u.RawQuery = q
	return u.String(), nil
}

// logoutMessage returns the verified XML of the logout message r carries, and its
// RelayState.
func (sp *ServiceProvider) logoutMessage(r *http.Request, cur *saml.ServiceProvider) ([]byte, string, error) {
	certs, err := idpSigningCerts(cur.IDPMetadata)
	if err != nil {
		return nil, "", refuse(ErrSignature, err.Error())
	}
	if r.Method == http.MethodGet {
		return verifyRedirect(r.URL.RawQuery, certs)
	}
	if err := r.ParseForm(); err != nil {
		return nil, "", refuse(ErrMalformed, "logout form: "+err.Error())
	}
	param := "SAMLRequest"
	if r.PostForm.Get(param) == "" {
		param = "SAMLResponse"
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(r.PostForm.Get(param)), ""))
	if err != nil || len(raw) == 0 || len(raw) > maxMessageBytes {
		return nil, "", refuse(ErrMalformed, "logout form: no base64 SAML message")
	}
	if err := xrv.Validate(bytes.NewReader(raw)); err != nil {
		return nil, "", refuse(ErrMalformed, "logout form: "+err.Error())
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil || doc.Root() == nil {
		return nil, "", refuse(ErrMalformed, "logout form: not XML")
	}
	if !hasSignature(doc.Root()) {
		return nil, "", refuse(ErrUnsigned, "logout message posted without a signature")
	}
	vc := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: certs})
	vc.Clock = dsig.NewFakeClockAt(sp.now())
	validated, err := vc.Validate(doc.Root())
	if err != nil {
		return nil, "", refuse(ErrSignature, err.Error())
	}
	out := etree.NewDocument()
	out.SetRoot(validated) // only what the signature covers
	b, err := out.WriteToBytes()
	if err != nil {
		return nil, "", refuse(ErrMalformed, err.Error())
	}
	return b, r.PostForm.Get("RelayState"), nil
}

// verifyRedirect checks the query-string signature of an HTTP-Redirect message with
// the IdP's certificates, and inflates it. The signed octets are the query's own
// (still encoded) parameters, in the binding's order.
func verifyRedirect(rawQuery string, certs []*x509.Certificate) ([]byte, string, error) {
	raw := map[string]string{}
	for _, part := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if _, dup := raw[k]; dup {
			return nil, "", refuse(ErrMalformed, "logout query repeats "+k)
		}
		raw[k] = v
	}
	param := "SAMLRequest"
	if _, ok := raw[param]; !ok {
		param = "SAMLResponse"
	}
	msg, ok := raw[param]
	if !ok {
		return nil, "", refuse(ErrMalformed, "logout query without a SAML message")
	}
	if raw["Signature"] == "" || raw["SigAlg"] == "" {
		return nil, "", refuse(ErrUnsigned, "logout message without a query signature")
	}
	signed := param + "=" + msg
	if rs, ok := raw["RelayState"]; ok {
		signed += "&RelayState=" + rs
	}
	signed += "&SigAlg=" + raw["SigAlg"]
	alg, _ := url.QueryUnescape(raw["SigAlg"])
	var hash crypto.Hash
	switch alg {
	case dsig.RSASHA256SignatureMethod:
		hash = crypto.SHA256
	case dsig.RSASHA512SignatureMethod:
		hash = crypto.SHA512
	default:
		return nil, "", refuse(ErrSignature, "signature algorithm "+alg+" not accepted")
	}
	sigText, _ := url.QueryUnescape(raw["Signature"])
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return nil, "", refuse(ErrSignature, "signature not base64")
	}
	h := hash.New()
	h.Write([]byte(signed))
	digest := h.Sum(nil)
	verified := false
	for _, c := range certs {
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && rsa.VerifyPKCS1v15(pub, hash, digest, sig) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, "", refuse(ErrSignature, "query signature does not verify with the IdP's certificates")
	}
	text, _ := url.QueryUnescape(msg)
	deflated, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, "", refuse(ErrMalformed, "logout message not base64")
	}
	body, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(deflated)), maxMessageBytes+1))
	if err != nil || len(body) > maxMessageBytes {
		return nil, "", refuse(ErrMalformed, "logout message does not inflate")
	}
	if err := xrv.Validate(bytes.NewReader(body)); err != nil {
		return nil, "", refuse(ErrMalformed, err.Error())
	}
	relay, _ := url.QueryUnescape(raw["RelayState"])
	return body, relay, nil
}

// idpSigningCerts are the IdP metadata's signing certificates.
func idpSigningCerts(idp *saml.EntityDescriptor) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, d := range idp.IDPSSODescriptors {
		for _, kd := range d.KeyDescriptors {
			if kd.Use != "" && kd.Use != "signing" {
				continue
			}
			for _, c := range kd.KeyInfo.X509Data.X509Certificates {
				der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(c.Data), ""))
				if err != nil {
					return nil, err
				}
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					return nil, err
				}
				out = append(out, cert)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("idp metadata: no signing certificate")
	}
	return out, nil
}
