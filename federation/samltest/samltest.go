// Package samltest holds what tests of SAML logins need to play an identity
// provider: throwaway key pairs, and signing and encrypting assertions the way
// Shibboleth does. Only tests import it.
package samltest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"
)

// KeyPair is an RSA key with a self-signed certificate, valid for a day.
type KeyPair struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// NewKeyPair makes a 2048-bit key pair whose certificate names cn. It is slow under
// -race: tests should share the few they need.
func NewKeyPair(cn string) (KeyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return KeyPair{}, fmt.Errorf("key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("certificate for %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return KeyPair{}, fmt.Errorf("certificate for %s: %w", cn, err)
	}
	return KeyPair{Key: key, Cert: cert}, nil
}

// PEM returns the key (PKCS #1) and the certificate as PEM, as SP settings files take them.
func (k KeyPair) PEM() (keyPEM, certPEM []byte) {
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Key)})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Raw})
	return keyPEM, certPEM
}

// Sign signs el enveloped with RSA-SHA256 and exclusive C14N, as Shibboleth does.
func Sign(k KeyPair, el *etree.Element) (*etree.Element, error) {
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{
		Certificate: [][]byte{k.Cert.Raw}, PrivateKey: k.Key, Leaf: k.Cert,
	}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		return nil, err
	}
	return ctx.SignEnveloped(el)
}

// Encrypt wraps assertion in an EncryptedAssertion for the SP holding cert's key
// (RSA-OAEP key transport, AES-128-CBC), as Shibboleth does by default.
func Encrypt(cert *x509.Certificate, assertion *etree.Element) (*etree.Element, error) {
	doc := etree.NewDocument()
	doc.SetRoot(assertion.Copy())
	buf, err := doc.WriteToBytes()
	if err != nil {
		return nil, err
	}
	enc := xmlenc.OAEP()
	enc.BlockCipher = xmlenc.AES128CBC
	enc.DigestMethod = &xmlenc.SHA1
	data, err := enc.Encrypt(cert, buf, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	data.CreateAttr("Type", "http://www.w3.org/2001/04/xmlenc#Element")
	el := etree.NewElement("saml:EncryptedAssertion")
	el.AddChild(data)
	return el, nil
}
