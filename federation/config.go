package federation

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Identity is what the identity provider asserted about the user.
type Identity struct {
	EAAHash string // Umbrella's persistent, pseudonymous user id
	UID     string // Umbrella username
	Email   string
	Name    string
	// NameID of the assertion's subject and the IdP's SessionIndex: single logout
	// names the session by them.
	NameID, NameIDFormat, SessionIndex string
	// Values are every value of the role attribute (AttributeNames.Values), which
	// the site maps to roles.
	Values []string
}

// Well-known attribute names (SAML 2.0 URI form, as Shibboleth releases them).
const (
	AttrEduPersonTargetedID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.10"
	AttrEduPersonUniqueID   = "urn:oid:1.3.6.1.4.1.5923.1.1.1.13"
	AttrUID                 = "urn:oid:0.9.2342.19200300.100.1.1"
	AttrMail                = "urn:oid:0.9.2342.19200300.100.1.3"
	AttrDisplayName         = "urn:oid:2.16.840.1.113730.3.1.241"
	AttrCommonName          = "urn:oid:2.5.4.3"
	persistentNameIDFormat  = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
)

// AttributeNames lists, per Identity field, the attribute names (Name or
// FriendlyName) to look for, first match wins.
type AttributeNames struct {
	EAAHash []string
	UID     []string
	Email   []string
	Name    []string
	// Values names the attribute (e.g. eduPersonEntitlement) all of whose values
	// Identity.Values gets; none by default.
	Values []string
	// EAAHashFromPersistentNameID falls back to a persistent NameID when none
	// of the EAAHash attributes is present.
	EAAHashFromPersistentNameID bool
}

// DefaultAttributeNames: Umbrella's EAAHash travels as eduPersonTargetedID
// (the pairwise persistent id slot, also what Shibboleth SPs call
// "persistent-id"); "EAAHash" covers IdPs that release it under that
// friendly name; a persistent NameID is the last resort.
func DefaultAttributeNames() AttributeNames {
	return AttributeNames{
		EAAHash:                     []string{AttrEduPersonTargetedID, "EAAHash", AttrEduPersonUniqueID, "eduPersonUniqueId"},
		UID:                         []string{AttrUID, "uid"},
		Email:                       []string{AttrMail, "mail"},
		Name:                        []string{AttrDisplayName, "displayName", AttrCommonName, "cn"},
		EAAHashFromPersistentNameID: true,
	}
}

// Config configures the SAML service provider.
type Config struct {
	// EntityID of this SP; default: the metadata URL.
	EntityID string
	// BaseURL is the public URL of the backend including its base path,
	// e.g. https://calipso.example/calipsoplus-services/.
	BaseURL *url.URL
	// Endpoint paths relative to BaseURL; defaults saml/metadata, saml/acs, saml/slo.
	MetadataPath, ACSPath, SLOPath string

	// KeyPEM and CertPEM are the SP's RSA key (PKCS#1 or PKCS#8) and certificate.
	KeyPEM, CertPEM []byte

	// IdP metadata: inline XML, or a URL fetched at New and every
	// RefreshInterval (default 24h) with FetchTimeout (default 30s).
	IdPMetadataXML  []byte
	IdPMetadataURL  string
	RefreshInterval time.Duration
	FetchTimeout    time.Duration
	// IdPEntityID picks the IdP out of an aggregate (EntitiesDescriptor);
	// optional when the metadata holds a single IdP.
	IdPEntityID string

	Attributes AttributeNames // default DefaultAttributeNames()

	// ClockSkew tolerated on assertion time limits, default 2m. crewjam/saml
	// additionally enforces its own 3m (saml.MaxClockSkew), so larger values
	// do not loosen anything.
	ClockSkew time.Duration
	// LoginTimeout is how long a login started by StartLogin may take, default 15m.
	LoginTimeout time.Duration
	// AllowIdPInitiated accepts unsolicited responses (no InResponseTo).
	AllowIdPInitiated bool
	// ReplayCacheSize bounds the remembered assertion IDs, default 100000.
	ReplayCacheSize int

	HTTPClient *http.Client // for metadata; default http.DefaultClient
	// Logger receives the SP's warnings (metadata refresh failures); default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.BaseURL == nil || c.BaseURL.Scheme == "" || c.BaseURL.Host == "" {
		return errors.New("federation: BaseURL must be an absolute URL")
	}
	base := *c.BaseURL
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	base.RawPath, base.RawQuery, base.Fragment = "", "", ""
	c.BaseURL = &base
	if c.MetadataPath == "" {
		c.MetadataPath = "saml/metadata"
	}
	if c.ACSPath == "" {
		c.ACSPath = "saml/acs"
	}
	if c.SLOPath == "" {
		c.SLOPath = "saml/slo"
	}
	if len(c.KeyPEM) == 0 || len(c.CertPEM) == 0 {
		return errors.New("federation: KeyPEM and CertPEM are required")
	}
	if len(c.IdPMetadataXML) == 0 && c.IdPMetadataURL == "" {
		return errors.New("federation: IdPMetadataXML or IdPMetadataURL is required")
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 24 * time.Hour
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 30 * time.Second
	}
	if c.Attributes.EAAHash == nil && c.Attributes.UID == nil && c.Attributes.Email == nil && c.Attributes.Name == nil {
		c.Attributes = DefaultAttributeNames()
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = 2 * time.Minute
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 15 * time.Minute
	}
	if c.ReplayCacheSize <= 0 {
		c.ReplayCacheSize = 100_000
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	return nil
}

// resolve turns a path relative to BaseURL into an absolute URL.
func (c *Config) resolve(rel string) (url.URL, error) {
	ref, err := url.Parse(strings.TrimPrefix(rel, "/"))
	if err != nil {
		return url.URL{}, fmt.Errorf("federation: path %q: %w", rel, err)
	}
	return *c.BaseURL.ResolveReference(ref), nil
}

// Only returns a copy of a in which each non-empty name replaces the defaults of its
// attribute (the settings' umbrella.*_attribute): hash, uid, email, name.
func (a AttributeNames) Only(hash, uid, email, name string) AttributeNames {
	for _, o := range []struct {
		name string
		dst  *[]string
	}{{hash, &a.EAAHash}, {uid, &a.UID}, {email, &a.Email}, {name, &a.Name}} {
		if o.name != "" {
			*o.dst = []string{o.name}
		}
	}
	return a
}

// ReadFiles reads the SP's key and certificate, and the IdP's metadata when
// idpMetadataFile is set, into c.
func (c *Config) ReadFiles(keyFile, certFile, idpMetadataFile string) error {
	var err error
	if c.KeyPEM, err = os.ReadFile(keyFile); err != nil {
		return fmt.Errorf("sp key: %w", err)
	}
	if c.CertPEM, err = os.ReadFile(certFile); err != nil {
		return fmt.Errorf("sp certificate: %w", err)
	}
	if idpMetadataFile != "" {
		if c.IdPMetadataXML, err = os.ReadFile(idpMetadataFile); err != nil {
			return fmt.Errorf("idp metadata: %w", err)
		}
	}
	return nil
}
