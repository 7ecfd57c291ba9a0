package federation

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// HeaderMode reads the identity that Apache mod_shib (ShibUseHeaders On)
// puts in request headers. Headers are believed only when the connection
// comes straight from a trusted proxy; anyone else could simply send them.
type HeaderMode struct {
	TrustedProxies []netip.Prefix
	HashHeader     string // default "EAAHash"
	UIDHeader      string // default "uid"
	EmailHeader    string // default "mail"
	NameHeader     string // default "displayName"
	// ValuesHeader names the header of the role attribute (Identity.Values); "": none.
	ValuesHeader string
	Logger       *slog.Logger // says why a hash was refused; nil: slog.Default()
}

// Identity returns the federated identity of r, or false when r does not
// come from a trusted proxy or carries no single EAAHash.
func (h HeaderMode) Identity(r *http.Request) (Identity, bool) {
	if !h.trusted(r.RemoteAddr) {
		return Identity{}, false
	}
	hash, ok := singleValue(r.Header.Get(orDefault(h.HashHeader, "EAAHash")))
	if !ok || hash == "" {
		return Identity{}, false
	}
	if err := CheckHash(hash); err != nil {
		log := h.Logger
		if log == nil {
			log = slog.Default()
		}
		log.WarnContext(r.Context(), "federated login refused", "reason", err, "remote", r.RemoteAddr)
		return Identity{}, false
	}
	uid, _ := singleValue(r.Header.Get(orDefault(h.UIDHeader, "uid")))
	id := Identity{
		EAAHash: hash,
		UID:     uid,
		Email:   firstValue(r.Header.Get(orDefault(h.EmailHeader, "mail"))),
		Name:    firstValue(r.Header.Get(orDefault(h.NameHeader, "displayName"))),
	}
	if h.ValuesHeader != "" {
		for _, v := range splitValues(r.Header.Get(h.ValuesHeader)) {
			if v != "" {
				id.Values = append(id.Values, v)
			}
		}
		slices.Sort(id.Values)
		id.Values = slices.Compact(id.Values)
	}
	return id, true
}

func (h HeaderMode) trusted(remoteAddr string) bool {
	host := remoteAddr
	if hp, err := netip.ParseAddrPort(remoteAddr); err == nil {
		host = hp.Addr().String()
	} else if hst, _, err := net.SplitHostPort(remoteAddr); err == nil {
		host = hst
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range h.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// mod_shib joins multiple values with ';' (escaping literal ones as '\;').
func splitValues(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v) && v[i+1] == ';':
			cur.WriteByte(';')
			i++
		case v[i] == ';':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(v[i])
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// singleValue refuses a multi-valued identifier: which one would be meant?
func singleValue(v string) (string, bool) {
	vals := splitValues(v)
	if len(vals) != 1 {
		return "", false
	}
	return vals[0], true
}

func firstValue(v string) string { return splitValues(v)[0] }
